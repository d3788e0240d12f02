"""Writing a result to files: still images or a video, chosen by the output's extension.

| extension        | image result                      | video result (fps set)             |
|------------------|-----------------------------------|------------------------------------|
| .png .jpg .jpeg  | one file per image (out-1.png...) | one file per frame (out-1.png...)  |
| .webp .gif       | one still file per image          | one animated file                  |
| .mp4             | the images as frames, at --fps/1  | one H.264 video                    |

Nothing a user asked for is dropped: whatever came back is written in the asked-for format.

`encode_items` is the same job for the server: a result as response items (base64 or a URL of a
file in the server's output folder), stills or video. This module is the one place that turns
an `ImageResult` into bytes; every file is written atomically (`_util.files.write_atomic`).
"""

from __future__ import annotations

import base64
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localimg._util.files import write_atomic
from localimg.errors import InvalidRequest
from localimg.media import encode as images
from localimg.media import video

if TYPE_CHECKING:
    from PIL.Image import Image

    from localimg.requests import ImageResult

OUTPUT_SUFFIXES = ("png", "jpg", "jpeg", "webp", "gif", "mp4")
QUALITY_SUFFIXES = ("jpg", "jpeg", "webp", "mp4")


def suffix_of(output: Path | None) -> str | None:
    return output.suffix.lower().lstrip(".") if output is not None and output.suffix else None


def check_output(output: Path | None, quality: int | None, param: str = "--output") -> None:
    """Refuse a bad output name or quality before any work is done."""
    suffix = suffix_of(output)
    if output is not None and suffix not in OUTPUT_SUFFIXES:
        raise InvalidRequest(
            f"{param}: unsupported image format {output.name!r}; use .png, .jpg, .webp, .gif "
            "or .mp4 (videos: .mp4, .webp, .gif)",
            param=param,
        )
    if quality is not None and not 1 <= quality <= 100:
        raise InvalidRequest("--quality must be between 1 and 100", param="--quality")
    if quality is not None and suffix not in QUALITY_SUFFIXES:
        raise InvalidRequest(
            "--quality applies to .jpg and .webp outputs (and .mp4 videos), not .png or .gif",
            param="--quality",
        )


def default_output(result: ImageResult) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(f"localimg-{stamp}.{'mp4' if result.fps is not None else 'png'}")


def write_result(result: ImageResult, output: Path | None, quality: int | None) -> list[Path]:
    """Encode and atomically write `result`; return the files written."""
    output = output or default_output(result)
    suffix = suffix_of(output) or "png"
    if result.fps is not None and suffix in video.VIDEO_FORMATS:
        data = video.encode_video(
            result.images,
            video.video_format(suffix),
            result.fps,
            parameters=images.a1111_parameters(result, 0),
            quality=quality,
        )
        write_atomic(output, data)
        return [output]
    if suffix == "mp4":  # still images as the frames of a slideshow
        fps = result.request.fps if result.request and result.request.fps else 1.0
        data = video.encode_video(
            result.images,
            "mp4",
            fps,
            parameters=images.a1111_parameters(result, 0),
            quality=quality,
        )
        write_atomic(output, data)
        return [output]
    paths = images.numbered_paths(output, len(result.images))
    for index, (image, path) in enumerate(zip(result.images, paths, strict=True)):
        parameters = images.a1111_parameters(result, min(index, len(result.seeds) - 1))
        if suffix == "gif":
            data = video.encode_video([image], "gif", 1.0, parameters=parameters)
        else:
            fmt = images.format_from_name(suffix, param="--output")
            data = images.encode(image, fmt, parameters=parameters, quality=quality)
        write_atomic(path, data)
    return paths


# -- the server's response items ----------------------------------------------------------------


def is_video(result: ImageResult, video_format: str | None) -> bool:
    """A video result, or still images asked for as mp4 / gif."""
    return result.fps is not None or video_format in ("mp4", "gif")


def _item(data: bytes, ext: str, as_url: bool, output_dir: Path, url_prefix: str) -> dict[str, Any]:
    if not as_url:
        return {"b64_json": base64.b64encode(data).decode("ascii")}
    name = f"{secrets.token_urlsafe(16)}.{ext}"
    write_atomic(output_dir / name, data)
    return {"url": f"{url_prefix}/{name}"}


def image_item(
    image: Image,
    image_format: images.ImageFormat,
    compression: int | None,
    as_url: bool,
    output_dir: Path,
    url_prefix: str,
    parameters: str | None = None,
) -> dict[str, Any]:
    """One image that is not a generation's (an upscale) as a response item, like encode_items'."""
    data = images.encode(image, image_format, parameters=parameters, quality=compression)
    ext = "jpg" if image_format == "jpeg" else image_format
    return _item(data, ext, as_url, output_dir, url_prefix)


def encode_items(
    result: ImageResult,
    image_format: images.ImageFormat,
    compression: int | None,
    response_format: str,
    output_dir: Path,
    url_prefix: str,
    *,
    video_format: str | None = None,
    response_format_given: bool = True,
) -> list[dict[str, Any]]:
    """A result as response items: `{"b64_json"}` or `{"url": url_prefix/<random name>}`.

    Still images give one item each in `image_format`. A video result (or stills asked for as
    `video_format` mp4 / gif) goes to `video_items`. `url_prefix` is where the server serves
    `output_dir` (its base URL and files path).
    """
    if is_video(result, video_format):
        as_url = response_format == "url" or (not response_format_given and result.fps is not None)
        return video_items(result, video_format, compression, as_url, output_dir, url_prefix)
    ext = "jpg" if image_format == "jpeg" else image_format
    items = []
    for index, image in enumerate(result.images):
        data = images.encode(
            image,
            image_format,
            parameters=images.a1111_parameters(result, index),
            quality=compression,
        )
        items.append(_item(data, ext, response_format == "url", output_dir, url_prefix))
    return items


def video_items(
    result: ImageResult,
    video_format: str | None,
    compression: int | None,
    as_url: bool,
    output_dir: Path,
    url_prefix: str,
) -> list[dict[str, Any]]:
    """The items of a video (one item) or of still GIFs (one per image); mp4 unless asked."""
    fmt = video.video_format(video_format or "mp4")
    if result.fps is not None or fmt == "mp4":
        fps = result.fps or (result.request.fps if result.request else None) or 1.0
        clips = [(result.images, fps, images.a1111_parameters(result, 0))]
    else:  # still images as GIF files
        clips = [
            ([image], 1.0, images.a1111_parameters(result, index))
            for index, image in enumerate(result.images)
        ]
    items = []
    for frames, fps, parameters in clips:
        data = video.encode_video(
            frames, fmt, fps, parameters=parameters, quality=None if fmt == "gif" else compression
        )
        item: dict[str, Any] = {"mime_type": video.VIDEO_MIME_TYPES[fmt]}
        item.update(_item(data, fmt, as_url, output_dir, url_prefix))
        if result.fps is not None:
            item["frames"] = len(frames)
            item["fps"] = fps
        items.append(item)
    return items


def write_video_files(result: ImageResult, path: Path, thumbnail: Path) -> None:
    """A video job's MP4 and its WebP thumbnail (the first frame)."""
    fps = result.fps or 1.0
    parameters = images.a1111_parameters(result, 0)
    write_atomic(path, video.encode_video(result.images, "mp4", fps, parameters=parameters))
    write_atomic(thumbnail, images.encode(result.images[0], "webp", parameters=parameters))
