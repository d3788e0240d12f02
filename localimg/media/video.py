"""Encoding video results: MP4 (H.264), animated WebP and GIF, with the parameters embedded.

A video result is an `ImageResult` whose `images` are frames and whose `fps` is set. MP4 goes
through the ffmpeg binary that imageio-ffmpeg ships (H.264, yuv420p: plays in every browser and
player); WebP and GIF through Pillow. The generation parameters go where each format keeps text:
the MP4 `comment` tag, the WebP EXIF UserComment (as for still images), the GIF comment.
"""

from __future__ import annotations

import io
import os
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from localimg.errors import BackendNotInstalled, InvalidRequest, LocalimgError

if TYPE_CHECKING:
    from PIL.Image import Image

VideoFormat = Literal["mp4", "webp", "gif"]
VIDEO_FORMATS: dict[str, VideoFormat] = {"mp4": "mp4", "webp": "webp", "gif": "gif"}
VIDEO_MIME_TYPES: dict[VideoFormat, str] = {
    "mp4": "video/mp4",
    "webp": "image/webp",
    "gif": "image/gif",
}


class EncodeError(LocalimgError):
    """ffmpeg failed to encode a video."""

    exit_code = 5
    http_status = 500
    error_type = "server_error"
    default_code = "encode_failed"


def video_format(value: str, param: str = "output_format") -> VideoFormat:
    """`clip.MP4` or `gif` → the format; anything else is an error listing the formats."""
    key = value.lower().rsplit(".", 1)[-1]
    if key not in VIDEO_FORMATS:
        raise InvalidRequest(
            f"unsupported video format {value!r}; use mp4, webp (animated) or gif", param=param
        )
    return VIDEO_FORMATS[key]


def encode_video(
    frames: list[Image],
    fmt: VideoFormat,
    fps: float,
    *,
    parameters: str | None = None,
    quality: int | None = None,
) -> bytes:
    """Encode frames; `quality` (1-100) applies to mp4 (mapped to x264's CRF) and webp."""
    if not frames:
        raise InvalidRequest("a video needs at least one frame")
    frames = [f if f.mode == "RGB" else f.convert("RGB") for f in frames]
    if fmt == "mp4":
        return _mp4(frames, fps, parameters, quality)
    duration = max(1, round(1000 / fps))  # milliseconds per frame
    buffer = io.BytesIO()
    options: dict[str, object] = {
        "save_all": True,
        "append_images": frames[1:],
        "duration": duration,
        "loop": 0,
    }
    if fmt == "gif":
        if parameters:
            options["comment"] = parameters.encode("utf-8")
        frames[0].save(buffer, format="GIF", **options)
    else:
        from localimg.media.encode import EXIF_IFD, USER_COMMENT

        if parameters:
            from PIL import Image as PILImage

            exif = PILImage.Exif()
            exif.get_ifd(EXIF_IFD)[USER_COMMENT] = b"UNICODE\0" + parameters.encode("utf-16-be")
            options["exif"] = exif.tobytes()
        if quality is not None:
            options["quality"] = quality
        frames[0].save(buffer, format="WEBP", **options)
    return buffer.getvalue()


def _mp4(frames: list[Image], fps: float, parameters: str | None, quality: int | None) -> bytes:
    try:
        import imageio_ffmpeg
    except ImportError:
        raise BackendNotInstalled(
            "MP4 output needs imageio-ffmpeg: pip install imageio-ffmpeg (or use .webp / .gif)"
        ) from None
    width, height = frames[0].size
    crf = 23 if quality is None else round(51 - (quality / 100) * 51)
    # yuv420p needs even sides; pad by one pixel rather than scale the picture.
    pad = ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"] if width % 2 or height % 2 else []
    fd, tmp = tempfile.mkstemp(suffix=".mp4")
    os.close(fd)
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-y",
        "-loglevel",
        "error",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{width}x{height}",
        "-r",
        f"{fps:g}",
        "-i",
        "-",
        *pad,
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-crf",
        str(crf),
        "-movflags",
        "+faststart",
        *(["-metadata", f"comment={parameters}"] if parameters else []),
        tmp,
    ]
    try:
        proc = subprocess.run(
            command, input=b"".join(f.tobytes() for f in frames), capture_output=True, check=False
        )
        if proc.returncode != 0:
            message = proc.stderr.decode(errors="replace").strip().splitlines()
            raise EncodeError(f"ffmpeg could not encode the MP4: {message[-1] if message else ''}")
        return Path(tmp).read_bytes()
    finally:
        Path(tmp).unlink(missing_ok=True)
