"""Encoding results to files and bytes, with the generation parameters embedded.

The parameters are written the way AUTOMATIC1111 writes them (a `parameters` text chunk in PNG,
the EXIF UserComment in JPEG and WebP), so tools that read A1111 metadata (image browsers, civitai,
ComfyUI loaders) read localimg's images too.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from localimg import __version__
from localimg.errors import InvalidRequest

if TYPE_CHECKING:
    from PIL.Image import Image

    from localimg.requests import ImageRequest, ImageResult

ImageFormat = Literal["png", "jpeg", "webp"]
FORMATS: dict[str, ImageFormat] = {
    "png": "png",
    "jpg": "jpeg",
    "jpeg": "jpeg",
    "webp": "webp",
}
MIME_TYPES: dict[ImageFormat, str] = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
}
EXIF_IFD = 0x8769
OPAQUE_ENOUGH = 128  # alpha below this somewhere: the picture has real transparency
USER_COMMENT = 0x9286


def format_from_name(value: str, param: str = "output_format") -> ImageFormat:
    """`out.JPG` or `jpeg` → "jpeg"; anything else is an error listing the formats."""
    key = value.lower().rsplit(".", 1)[-1]
    if key not in FORMATS:
        raise InvalidRequest(
            f"unsupported image format {value!r}; use png, jpeg (jpg) or webp", param=param
        )
    return FORMATS[key]


def a1111_parameters(result: ImageResult, index: int) -> str:
    """The generation parameters of image `index` in AUTOMATIC1111's text layout."""
    request = result.request
    lines = []
    fields: list[tuple[str, object]] = []
    if request is not None:
        lines.append(request.prompt)
        if request.negative_prompt:
            lines.append(f"Negative prompt: {request.negative_prompt}")
        fields += [("Steps", request.steps)]
        if result.scheduler:
            fields.append(("Sampler", result.scheduler))
        if request.cfg_scale is not None:  # None: the model's own guidance schedule
            fields += [("CFG scale", request.cfg_scale)]
    fields.append(("Seed", result.seeds[index]))
    if request is not None:
        fields.append(("Size", f"{request.width}x{request.height}"))
        if request.clip_skip:
            # A1111 counts from 1 (no layer skipped); localimg counts the layers skipped.
            fields.append(("Clip skip", request.clip_skip + 1))
        if request.strength is not None:
            fields.append(("Denoising strength", request.strength))
        fields += hires_fields(request)
    if result.model:
        fields.append(("Model", result.model))
    fields += list(result.infotext.items())
    fields.append(("Version", f"localimg {__version__}"))
    lines.append(", ".join(f"{key}: {_field(value)}" for key, value in fields))
    return "\n".join(lines)


# The upscalers A1111 writes with a capital (its own names); model names are written as named.
BUILT_IN_UPSCALERS = ("latent", "lanczos", "bicubic", "nearest")


def hires_fields(request: ImageRequest) -> list[tuple[str, object]]:
    """A merged request's hires fix as A1111 writes it: "Hires upscale" (or "Hires resize" when
    a size decided it), "Hires steps" when they differ from the first pass's (A1111 writes its
    0, "the same", as nothing), "Hires upscaler", the denoise and the hires prompts when set.
    "Size" stays the first pass's, as in A1111."""
    hires = request.hires
    if hires is None:
        return []
    upscaler = hires.upscaler or "latent"
    if upscaler.split(" ")[0] in BUILT_IN_UPSCALERS:
        upscaler = upscaler[:1].upper() + upscaler[1:]
    fields: list[tuple[str, object]] = []
    if request.strength is None:
        fields.append(("Denoising strength", hires.denoise))
    if hires.scale is not None:
        fields.append(("Hires upscale", f"{hires.scale:g}"))
    else:
        fields.append(("Hires resize", f"{hires.width}x{hires.height}"))
    if hires.steps and hires.steps != request.steps:
        fields.append(("Hires steps", hires.steps))
    fields.append(("Hires upscaler", upscaler))
    if hires.prompt:
        fields.append(("Hires prompt", hires.prompt))
    if hires.negative_prompt is not None:
        fields.append(("Hires negative prompt", hires.negative_prompt))
    return fields


def _field(value: object) -> str:
    text = str(value)
    # A1111 quotes values that contain its separators.
    return f'"{text}"' if ("," in text or ":" in text) and not text.startswith('"') else text


def encode(
    image: Image,
    fmt: ImageFormat = "png",
    *,
    parameters: str | None = None,
    quality: int | None = None,
) -> bytes:
    """Encode one image; `quality` (0-100) applies to jpeg and webp."""
    from PIL import Image as PILImage
    from PIL import PngImagePlugin

    buffer = io.BytesIO()
    if fmt == "png":
        info = PngImagePlugin.PngInfo()
        if parameters:
            info.add_text("parameters", parameters)
        image.save(buffer, format="PNG", pnginfo=info)
        return buffer.getvalue()
    if fmt == "jpeg" and image.mode not in ("RGB", "L"):
        refuse_transparent_jpeg(image)
        image = image.convert("RGB")
    exif = PILImage.Exif()
    if parameters:
        exif.get_ifd(EXIF_IFD)[USER_COMMENT] = b"UNICODE\0" + parameters.encode("utf-16-be")
    options: dict[str, object] = {"exif": exif.tobytes()}
    if quality is not None:
        options["quality"] = quality
    image.save(buffer, format=fmt.upper(), **options)
    return buffer.getvalue()


def refuse_transparent_jpeg(image: Image) -> None:
    """JPEG has no alpha: a picture that is partly see-through (RGBA layers) would come out with
    its hidden pixels showing. Refused; an alpha channel that is all but opaque (a model's VAE
    noise around 255) is not transparency and is dropped."""
    if image.mode not in ("RGBA", "LA", "PA"):
        return
    extrema: Any = image.getchannel("A").getextrema()
    if int(extrema[0]) < OPAQUE_ENOUGH:
        raise InvalidRequest(
            "JPEG cannot keep transparency and this image is partly transparent (RGBA layers, "
            "for one); ask for png or webp (output_format, or a .png / .webp output file)",
            param="output_format",
        )


def read_parameters(path: Path) -> str | None:
    """The embedded parameters of an image written by localimg (or A1111), if any."""
    from PIL import Image as PILImage

    with PILImage.open(path) as image:
        text = getattr(image, "text", {}).get("parameters") if hasattr(image, "text") else None
        if text:
            return str(text)
        raw = image.getexif().get_ifd(EXIF_IFD).get(USER_COMMENT)
    if isinstance(raw, bytes) and raw.startswith(b"UNICODE\0"):
        return raw[8:].decode("utf-16-be")
    return None


def numbered_paths(output: Path, count: int) -> list[Path]:
    """`out.png` for one image; `out-1.png` ... `out-N.png` for several."""
    if count == 1:
        return [output]
    return [output.with_name(f"{output.stem}-{i}{output.suffix}") for i in range(1, count + 1)]
