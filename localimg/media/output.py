"""Writing a result to files: still images or a video, chosen by the output's extension.

| extension        | image result                      | video result (fps set)             |
|------------------|-----------------------------------|------------------------------------|
| .png .jpg .jpeg  | one file per image (out-1.png...) | one file per frame (out-1.png...)  |
| .webp .gif       | one still file per image          | one animated file                  |
| .mp4             | the images as frames, at --fps/1  | one H.264 video                    |

Nothing a user asked for is dropped: whatever came back is written in the asked-for format.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from localimg.errors import InvalidRequest
from localimg.media import encode as images
from localimg.media import video

if TYPE_CHECKING:
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
        images.write_atomic(output, data)
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
        images.write_atomic(output, data)
        return [output]
    paths = images.numbered_paths(output, len(result.images))
    for index, (image, path) in enumerate(zip(result.images, paths, strict=True)):
        parameters = images.a1111_parameters(result, min(index, len(result.seeds) - 1))
        if suffix == "gif":
            data = video.encode_video([image], "gif", 1.0, parameters=parameters)
        else:
            fmt = images.format_from_name(suffix, param="--output")
            data = images.encode(image, fmt, parameters=parameters, quality=quality)
        images.write_atomic(path, data)
    return paths
