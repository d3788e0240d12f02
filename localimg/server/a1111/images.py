"""img2img's input picture and mask the way A1111 reads them, and `save_images`' files.

A1111's mask: white (or, in a mask with transparency, opaque) is what is repainted; `mask_round`
makes it black and white, `inpainting_mask_invert` swaps the two, `mask_blur` softens its edge.
`inpainting_fill` 1 ("original") starts the masked area from the picture; 0 ("fill", A1111's
default) first paints it with the blurred colours around it, so the old content does not show
through. Saved images go to `<output dir>/a1111/<txt2img|img2img>-images/`, a folder the url
cleanup (which removes only top-level files) leaves alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from localimg._util.files import write_atomic
from localimg.media import conditioning, encode
from localimg.media.decode import image_from_text
from localimg.server.a1111.schemas import Img2ImgBody, mask_blur

if TYPE_CHECKING:
    from PIL.Image import Image

    from localimg.server.a1111.info import Outcome
    from localimg.server.a1111.state import A1111State


def read_mask(image: Image, *, blur: int, invert: bool, round_: bool) -> Image:
    """An A1111 mask → greyscale, white = repaint."""
    from PIL import ImageFilter, ImageOps

    alpha = image.getchannel("A") if image.mode in ("RGBA", "LA") else None
    low: Any = alpha.getextrema()[0] if alpha is not None else 255
    mask = alpha if alpha is not None and low < 255 else image.convert("L")
    if round_:
        mask = mask.point(lambda v: 255 if v > 127 else 0)
    if invert:
        mask = ImageOps.invert(mask)
    if blur > 0:
        mask = mask.filter(ImageFilter.GaussianBlur(blur))
    return mask


def fill_masked(image: Image, mask: Image) -> Image:
    """The masked area painted with ever less blurred colours of the rest of the picture."""
    from PIL import Image as PILImage
    from PIL import ImageFilter, ImageOps

    keep = ImageOps.invert(mask.point(lambda v: 255 if v > 127 else 0))
    source = PILImage.new("RGBA", image.size, (0, 0, 0, 0))
    source.paste(image.convert("RGBA"), mask=keep)
    premultiplied = source.convert("RGBa")
    out = PILImage.new("RGBA", image.size, (0, 0, 0, 0))
    for radius, repeats in ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)):
        layer = premultiplied.filter(ImageFilter.GaussianBlur(radius)) if radius else premultiplied
        rgba = layer.convert("RGBA")
        for _ in range(repeats):
            out = PILImage.alpha_composite(out, rgba)
    background = PILImage.new("RGBA", image.size, (255, 255, 255, 255))
    return PILImage.alpha_composite(background, out).convert("RGB")


def init_inputs(body: Img2ImgBody, settings: Any) -> tuple[Image, Image | None]:
    """The picture and the mask (None: plain img2img) of an img2img request (blocking)."""
    assert body.init_images
    picture = image_from_text(
        body.init_images[0], "init_images", settings.image_limits, settings.fetch_policy
    )
    init = conditioning.as_init(picture)
    if body.mask is None:
        return init, None
    raw = image_from_text(body.mask, "mask", settings.image_limits, settings.fetch_policy)
    raw = conditioning.orient(raw)
    if raw.size != init.size:
        raw = raw.resize(init.size)
    mask = read_mask(
        raw, blur=mask_blur(body), invert=bool(body.inpainting_mask_invert), round_=body.mask_round
    )
    if body.inpainting_fill == 0:
        init = fill_masked(init, mask)
    return init, mask


def save_images(
    outcome: Outcome, fmt: str, output_dir: Path, kind: str, a1: A1111State
) -> list[Path]:
    """Write each image (with its parameters) as A1111 names them: NNNNN-seed.png."""
    kind_format = encode.format_from_name(fmt, param="samples_format")
    suffix = "jpg" if kind_format == "jpeg" else kind_format
    folder = output_dir / "a1111" / f"{kind}-images"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for image, seed, text in zip(outcome.images, outcome.seeds, outcome.infotexts, strict=True):
        path = folder / f"{next(a1.saved):05d}-{seed}.{suffix}"
        write_atomic(path, encode.encode(image, kind_format, parameters=text))
        written.append(path)
    return written
