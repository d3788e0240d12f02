"""Models dirs for image-conditioned and video tests: the seed's YAML files on tiny models.

The seed's four examples (stablediffusion-edit, stablediffusion-depth, img2vid, txt2vid) are used
as written, except that `parameters.model` points at a tiny random pipeline and `step` is small.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from tests.support.tiny_conditioned import tiny_path
from tests.support.tiny_models import tiny_sd_path

SEED_DIR = Path(__file__).parents[1] / "data" / "seed"
SEED_MODELS = {
    "stablediffusion-edit": ("sd", 4),
    "stablediffusion-depth": ("depth2img", 3),
    "img2vid": ("img2vid", 2),
    "txt2vid": ("txt2vid", 2),
}


def write_models(folder: Path) -> Path:
    """tiny.yaml (text-to-image) plus the seed's four image/video YAML files."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.yaml").write_text(
        f"name: tiny\nbackend: diffusers\nparameters:\n  model: {tiny_sd_path()}\nstep: 4\n",
        encoding="utf-8",
    )
    for name, (kind, steps) in SEED_MODELS.items():
        data = yaml.safe_load((SEED_DIR / f"{name}.yaml").read_text(encoding="utf-8"))
        data["parameters"]["model"] = str(tiny_sd_path() if kind == "sd" else tiny_path(kind))
        data["step"] = steps
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    return folder


def noise_image(width: int = 64, height: int = 64, seed: int = 0, mode: str = "RGB") -> Image.Image:
    channels = len(mode)
    array = np.random.RandomState(seed).randint(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(array if channels > 1 else array[..., 0], mode)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def half_mask(width: int = 64, height: int = 64) -> Image.Image:
    """White (change) on the left half, black (keep) on the right."""
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, (0, 0, width // 2, height))
    return mask


@contextmanager
def file_server(folder: Path) -> Iterator[str]:
    """A local HTTP server for `folder` (the URL-fetch path); yields its base URL."""
    handler = partial(_QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass
