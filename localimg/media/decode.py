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
    image: Image
    try:
        image = PILImage.open(io.BytesIO(data))
        width, height = image.size
    except (OSError, ValueError, PILImage.DecompressionBombError) as exc:
        raise UnreadableImage(
            f"{param}: not a readable image (PNG, JPEG or WebP expected): {exc}", param=param
        ) from None
    if width * height > limits.max_pixels:
        raise PayloadTooLarge(
            f"{param}: the image is {width}x{height} = {width * height} pixels; the limit is "
            f"{limits.max_pixels}",
            param=param,
        )
    try:
        image.load()
    except (OSError, ValueError, PILImage.DecompressionBombError) as exc:
        raise UnreadableImage(f"{param}: the image data is damaged: {exc}", param=param) from None
    if image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    return image


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
