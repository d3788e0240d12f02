"""Request bodies: JSON bodies and multipart image forms (edits, variations), decoded with
the server's limits. Reusable by any route that takes a body or uploaded images."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.datastructures import UploadFile
from starlette.requests import Request

from localimg.errors import InvalidRequest
from localimg.media.decode import ImageLimits, decode_image
from localimg.requests import MAX_CONTROL_UNITS
from localimg.server.openai import schemas

if TYPE_CHECKING:
    from PIL.Image import Image

MAX_UPLOADS = 16


async def json_body(request: Request) -> Any:
    """The request body as JSON, or a 400 that says what to send."""
    raw = await request.body()
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(
            f"the request body is not valid JSON ({exc}); send Content-Type: application/json "
            "with a JSON object"
        ) from None


@dataclass
class ImageForm:
    """A parsed multipart edits/variations request: validated fields and decoded images."""

    fields: schemas.EditFields
    images: list[Image] = field(default_factory=list)
    mask: Image | None = None
    control_images: list[Image] = field(default_factory=list)


# Text fields that may repeat in a form, one per control image (a list, as in a JSON body).
REPEATABLE = frozenset(
    {"control_net", "control_strength", "control_start", "control_end", "control_preprocess"}
)
CONTROL_FILES = ("control_image", "control_image[]")


async def _read_upload(upload: UploadFile, param: str, limits: ImageLimits) -> Image:
    data = await upload.read()
    return await asyncio.to_thread(decode_image, data, param, limits)


async def parse_image_form(
    request: Request,
    limits: ImageLimits,
    *,
    needs_prompt: bool,
    fields: type[schemas.EditFields] = schemas.EditFields,
) -> ImageForm:
    """Parse `image` / repeated `image[]`, `mask` and the text fields of a multipart request.

    Reusable by any route that takes uploaded images: the images are decoded under the pixel
    and byte limits (413, 422), the text fields validated like a generation body (400) by
    `fields` (EditFields, or a subclass with a route's own fields).
    """
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise InvalidRequest(
            "this endpoint takes multipart/form-data with the image file(s) in 'image' "
            f"(or repeated 'image[]') (got Content-Type {content_type or 'none'!r})"
        )
    form = await request.form(max_files=MAX_UPLOADS + 1 + MAX_CONTROL_UNITS, max_fields=64)
    try:
        uploads, mask_upload, controls, text = _split_form(form.multi_items())
        if not uploads:
            raise InvalidRequest(
                "an image file is required in 'image' (or 'image[]')", param="image"
            )
        if len(uploads) > MAX_UPLOADS:
            raise InvalidRequest(f"at most {MAX_UPLOADS} images per request", param="image")
        if needs_prompt and not str(text.get("prompt", "")).strip():
            raise InvalidRequest("prompt is required (a non-empty string)", param="prompt")
        parsed = ImageForm(fields=schemas.parse_model(fields, text))
        for key, upload in uploads:
            parsed.images.append(await _read_upload(upload, key, limits))
        if len(controls) > MAX_CONTROL_UNITS:
            raise InvalidRequest(
                f"{len(controls)} control images; at most {MAX_CONTROL_UNITS} are accepted",
                param="control_image",
            )
        for key, upload in controls:
            parsed.control_images.append(await _read_upload(upload, key, limits))
        if mask_upload is not None:
            parsed.mask = await _read_upload(mask_upload, "mask", limits)
            first = parsed.images[0]
            if parsed.mask.size != first.size:
                raise InvalidRequest(
                    f"mask is {parsed.mask.size[0]}x{parsed.mask.size[1]} but the image is "
                    f"{first.size[0]}x{first.size[1]}; they must be the same size",
                    param="mask",
                )
        return parsed
    finally:
        await form.close()


Uploads = list[tuple[str, UploadFile]]


def _split_form(
    items: list[tuple[str, UploadFile | str]],
) -> tuple[Uploads, UploadFile | None, Uploads, dict[str, Any]]:
    """A form's parts: the images, the mask, the control images and the text fields (a
    repeated control_* field becomes a list, one value per control image)."""
    uploads: Uploads = []
    controls: Uploads = []
    text: dict[str, Any] = {}
    mask_upload: UploadFile | None = None
    for key, value in items:
        if isinstance(value, UploadFile):
            if key in ("image", "image[]"):
                uploads.append((key, value))
            elif key == "mask":
                mask_upload = value
            elif key in CONTROL_FILES:
                controls.append((key, value))
            else:
                raise InvalidRequest(
                    f"unexpected file field {key!r}; files go in 'image', 'image[]', 'mask' or "
                    "'control_image'",
                    param=key,
                )
        elif key in ("image", "image[]", "mask", *CONTROL_FILES):
            raise InvalidRequest(f"{key} must be an uploaded file", param=key)
        elif key in REPEATABLE and key in text:
            previous = text[key]
            text[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        elif key in text:
            raise InvalidRequest(f"field {key!r} is given more than once", param=key)
        else:
            text[key] = value
    return uploads, mask_upload, controls, text
