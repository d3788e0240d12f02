"""Input pictures → model inputs: orientation, alpha, masks and size.

`localimg.inputs` decodes bytes safely (limits, formats); this module decides what a decoded
picture means to a model, the same way for every front end:

- EXIF orientation is applied, so a phone photo is upright for the model as it is on screen;
- an init image is RGB: transparent pixels are laid over white (what a viewer shows);
- a mask is greyscale where white (255) is what changes, as diffusers expects. A mask with
  transparency follows OpenAI's edits: its transparent area is what changes. With no mask, the
  edits endpoint takes the image's own transparent area as the mask;
- an image (and its mask) is resized to the request's size; with no size asked for, to the input's
  own size rounded to a multiple the model accepts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from localimg.errors import InvalidRequest, PayloadTooLarge, UnreadableImage
from localimg.requests import MAX_SIDE

if TYPE_CHECKING:
    from PIL.Image import Image

    from localimg.media.decode import ImageLimits
    from localimg.requests import ImageRequest


def orient(image: Image) -> Image:
    """Apply the EXIF orientation tag (a no-op for images without one)."""
    from PIL import ImageOps

    oriented = ImageOps.exif_transpose(image)
    return oriented if oriented is not None else image


def has_transparency(image: Image) -> bool:
    """True if some pixel is not fully opaque."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        alpha = image.convert("RGBA").getchannel("A")
        extrema: Any = alpha.getextrema()
        return bool(extrema[0] < 255)
    return False


def as_init(image: Image) -> Image:
    """The RGB picture a model starts from (orientation applied, alpha over white)."""
    from PIL import Image as PILImage

    image = orient(image)
    if image.mode == "RGB":
        return image
    if has_transparency(image):
        rgba = image.convert("RGBA")
        background = PILImage.new("RGBA", rgba.size, (255, 255, 255, 255))
        return PILImage.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def mask_from_alpha(image: Image) -> Image | None:
    """OpenAI's rule: the transparent area of an image is what changes (None if fully opaque)."""
    from PIL import ImageOps

    image = orient(image)
    if not has_transparency(image):
        return None
    return ImageOps.invert(image.convert("RGBA").getchannel("A"))


def as_mask(image: Image) -> Image:
    """A mask picture → greyscale, white = change (transparent = change when it has alpha)."""
    from_alpha = mask_from_alpha(image)
    if from_alpha is not None:
        return from_alpha
    return orient(image).convert("L")


def edit_inputs(image: Image, mask: Image | None, param: str = "mask") -> tuple[Image, Image]:
    """The image and mask of an edit (OpenAI's /v1/images/edits rules).

    The mask must have the image's size; without a mask the image's transparent area is the mask.
    """
    if mask is None:
        derived = mask_from_alpha(image)
        if derived is None:
            raise InvalidRequest(
                "no mask was given and the image has no transparent area to edit: send a mask "
                "(white or transparent = change) or a PNG with transparency",
                param=param,
            )
        return as_init(image), derived
    init = as_init(image)
    result = as_mask(mask)
    if result.size != init.size:
        raise InvalidRequest(
            f"the mask is {result.size[0]}x{result.size[1]} but the image is "
            f"{init.size[0]}x{init.size[1]}; they must be the same size",
            param=param,
        )
    return init, result


def size_for(image: Image, multiple: int, max_side: int = MAX_SIDE) -> tuple[int, int]:
    """The input's own size, scaled down to fit `max_side` and rounded to `multiple`."""
    scale = min(1.0, max_side / max(image.size))
    width, height = (side * scale for side in image.size)
    return (
        max(multiple, min(max_side, round(width / multiple) * multiple)),
        max(multiple, min(max_side, round(height / multiple) * multiple)),
    )


def fitted(request: ImageRequest, width: int, height: int) -> dict[str, Any]:
    """The request's image and mask resized to width x height (stretched, as diffusers does)."""
    from PIL import Image as PILImage

    changes: dict[str, Any] = {}
    if request.init_image is not None:
        image = request.init_image
        if image.mode != "RGB":
            image = as_init(image)
        if image.size != (width, height):
            image = image.resize((width, height), PILImage.Resampling.LANCZOS)
        changes["init_image"] = image
    if request.mask is not None:
        mask = request.mask if request.mask.mode == "L" else as_mask(request.mask)
        if mask.size != (width, height):
            mask = mask.resize((width, height), PILImage.Resampling.BILINEAR)
        changes["mask"] = mask
    return changes


def open_image_arg(value: str, param: str, limits: ImageLimits | None = None) -> Image:
    """A CLI image argument: a file path, an http(s) URL, a data URL or base64 text.

    URLs go through the guarded fetcher; the CLI runs for the person at the keyboard, so private
    and loopback addresses are allowed (the server refuses them unless told otherwise).
    """
    from localimg.media.decode import ImageLimits, decode_image, image_from_text
    from localimg.media.fetch import FetchPolicy

    limits = limits or ImageLimits()
    text = value.strip()
    if text.startswith(("http://", "https://", "data:")):
        policy = FetchPolicy(allow_private=True, max_bytes=limits.max_bytes)
        return image_from_text(text, param, limits, policy)
    path = Path(text).expanduser()
    if not path.is_file():
        raise UnreadableImage(
            f"{param}: {value!r} is not a file (give a path, an http(s) URL or a data: URL)",
            param=param,
        )
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise PayloadTooLarge(
            f"{param}: {path} is {size} bytes; the limit is {limits.max_bytes}", param=param
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UnreadableImage(f"{param}: cannot read {path}: {exc.strerror}", param=param) from None
    return decode_image(data, param, limits)


def keep_unmasked(images: list[Image], request: ImageRequest) -> list[Image]:
    """Inpainting: outside the mask, the result is the input image, pixel for pixel.

    Diffusion works in latent space, so even the kept area comes back through the VAE slightly
    changed; laying the original over it (weighted by the mask, so soft edges stay soft) makes
    "white changes, black stays" exact, as OpenAI's edits promise.
    """
    from PIL import Image as PILImage

    original, mask = request.init_image, request.mask
    if original is None or mask is None:
        return images
    kept = []
    for image in images:
        base = original if original.size == image.size else original.resize(image.size)
        weights = mask if mask.size == image.size else mask.resize(image.size)
        kept.append(PILImage.composite(image.convert("RGB"), base.convert("RGB"), weights))
    return kept
