"""Input images from clients: bytes, base64, data URLs or URLs, decoded with limits.

Shared by the server's JSON `file` field and multipart uploads (edits, variations), and by any
front end that takes an image. Decoding is bounded twice: by bytes before decoding, and by pixels
before the pixel data is read (a small PNG can declare a huge canvas: a decompression bomb).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import struct
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

from localimg.errors import PayloadTooLarge, UnreadableImage
from localimg.media.fetch import FetchPolicy, fetch

if TYPE_CHECKING:
    from PIL.Image import Image

DATA_URL = re.compile(r"^data:(?P<mime>[\w/+.-]*)(?P<params>(;[^,]*)?),(?P<data>.*)$", re.DOTALL)


@dataclass(frozen=True)
class ImageLimits:
    """How big an input image may be, in bytes and in decoded pixels."""

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 4096 * 4096


def decode_image(data: bytes, param: str, limits: ImageLimits) -> Image:
    """Bytes → an RGB(A) PIL image, or 413 (too big) / 422 (not an image we can read)."""
    from PIL import Image as PILImage

    if len(data) > limits.max_bytes:
        raise PayloadTooLarge(
            f"{param}: the image is {len(data)} bytes; the limit is {limits.max_bytes}",
            param=param,
        )
    if not data:
        raise UnreadableImage(f"{param}: the image is empty", param=param)
    size = _header_size(data)
    if size is not None:
        _check_pixels(size, param, limits)
    image: Image
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb guard: our (lower) limit below answers first, with a clear 413.
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            image = PILImage.open(io.BytesIO(data))
    except PILImage.DecompressionBombError:
        raise PayloadTooLarge(
            f"{param}: the image is larger than the limit of {_mpixels(limits)}", param=param
        ) from None
    except (OSError, ValueError) as exc:
        raise UnreadableImage(
            f"{param}: not a readable image (PNG, JPEG or WebP expected): {exc}", param=param
        ) from None
    _check_pixels(image.size, param, limits)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            image.load()
    except PILImage.DecompressionBombError:
        raise PayloadTooLarge(
            f"{param}: the image is larger than the limit of {_mpixels(limits)}", param=param
        ) from None
    except (OSError, ValueError) as exc:
        raise UnreadableImage(f"{param}: the image data is damaged: {exc}", param=param) from None
    if image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    return image


def _mpixels(limits: ImageLimits) -> str:
    return f"{limits.max_pixels / 2**20:g} Mpixel ({limits.max_pixels} pixels)"


def _check_pixels(size: tuple[int, int], param: str, limits: ImageLimits) -> None:
    width, height = size
    if width * height > limits.max_pixels:
        raise PayloadTooLarge(
            f"{param}: the image is {width}x{height} = {width * height} pixels; the limit is "
            f"{_mpixels(limits)}",
            param=param,
        )


def _header_size(data: bytes) -> tuple[int, int] | None:
    """The size an image's header declares, read without Pillow's bomb check or any decoding.

    `Image.open` is lazy but refuses a canvas over twice `Image.MAX_IMAGE_PIXELS` with its own
    message; the format plugins themselves only parse the header. None: no plugin reads it
    (`Image.open` then says why).
    """
    from PIL import Image as PILImage

    PILImage.preinit()
    for initialised in (False, True):
        if initialised:
            PILImage.init()
        for fmt in PILImage.ID:
            factory, accept = PILImage.OPEN[fmt]
            if accept is not None and not accept(data[:16]):
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    image = factory(io.BytesIO(data), "")
            except (SyntaxError, IndexError, TypeError, struct.error, OSError, ValueError):
                continue
            try:
                width, height = image.size
                return int(width), int(height)
            finally:
                image.close()
    return None


def image_from_text(
    value: str, param: str, limits: ImageLimits, policy: FetchPolicy | None
) -> Image:
    """A JSON image field: a data URL, plain base64, or (with a policy) an http(s) URL.

    Blocking when it fetches: call it from a worker thread in async code.
    """
    text = value.strip()
    if text.startswith(("http://", "https://")) or re.match(r"^[a-zA-Z][\w+.-]*://", text):
        if policy is None:
            raise UnreadableImage(f"{param}: URLs are not accepted here", param=param)
        return decode_image(fetch(text, policy, param), param, limits)
    match = DATA_URL.match(text)
    if match:
        if ";base64" not in match["params"]:
            raise UnreadableImage(f"{param}: only base64 data URLs are supported", param=param)
        text = match["data"]
    # base64 inflates by 4/3: refuse before decoding a huge string.
    if len(text) * 3 // 4 > limits.max_bytes + 3:
        raise PayloadTooLarge(
            f"{param}: the image is larger than the limit of {limits.max_bytes} bytes",
            param=param,
        )
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise UnreadableImage(
            f"{param}: not base64 image data, a data: URL or an http(s) URL", param=param
        ) from None
    return decode_image(data, param, limits)
