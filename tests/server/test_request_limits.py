"""Requests through the app, in process (nothing here depends on a connection): OpenAI
`quality` → steps (scaled by the engine from the model's own default), the 413 for an oversized
input image whatever its size, the prompt limit."""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from localimg.errors import PayloadTooLarge
from localimg.media.decode import ImageLimits, decode_image
from tests.support.served import Served, ServeSpec
from tests.support.server_support import assert_openai_error


def _nostep(tiny_sd: Path) -> Callable[[Path], Path]:
    def build(models: Path) -> Path:
        models.mkdir(parents=True)
        # No `step` in the YAML: quality scales the diffusers backend's default (30).
        (models / "nostep.yaml").write_text(
            f"name: nostep\nbackend: diffusers\nparameters:\n  model: {tiny_sd}\n",
            encoding="utf-8",
        )
        return models

    return build


@pytest.fixture(scope="module")
def serve_spec(tiny_sd: Path) -> ServeSpec:
    return ServeSpec(
        models=_nostep(tiny_sd), engine={"max_queue": 4}, model="nostep", in_process=True
    )


def generate(served: Served, body: dict[str, Any]) -> httpx.Response:
    return served.post("/v1/images/generations", body)


def test_quality_scales_the_backend_default_steps(served: Served) -> None:
    steps = {}
    for quality in ("low", "medium", "standard"):
        response = generate(served, {"prompt": "otter", "size": "64x64", "quality": quality})
        assert response.status_code == 200, response.text
        steps[quality] = response.json()["steps"]
    assert steps["low"] < steps["medium"] < steps["standard"]
    assert steps["low"] == 15 and steps["standard"] == 30
    explicit = generate(served, {"prompt": "otter", "size": "64x64", "quality": "low", "steps": 3})
    assert explicit.status_code == 200 and explicit.json()["steps"] == 3


def huge_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG whose header claims width x height; its pixel data is a few KB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("side", [5000, 20000])
def test_every_oversized_image_is_the_same_413(served: Served, side: int) -> None:
    png = huge_png(side, side)
    assert len(png) < 1024 * 1024
    assert struct.unpack(">II", png[16:24]) == (side, side)  # IHDR: what the header claims
    file = "data:image/png;base64," + base64.b64encode(png).decode()
    response = generate(served, {"prompt": "otter", "file": file, "mode": "img2img"})
    error = assert_openai_error(response, 413, param="file")
    assert f"{side}x{side}" in error["message"] and "16 Mpixel" in error["message"]
    assert "decompression bomb" not in error["message"].lower()


def test_decode_image_checks_the_header_before_decoding() -> None:
    with pytest.raises(PayloadTooLarge, match="20000x20000"):
        decode_image(huge_png(20000, 20000), "image", ImageLimits())


def test_a_very_long_prompt_is_a_clear_400(served: Served) -> None:
    body = {"prompt": "a" * 2_000_000, "size": "64x64"}
    assert len(str(body)) < 64 * 1024 * 1024  # far under the body limit: the prompt rule answers
    error = assert_openai_error(generate(served, body), 400, param="prompt")
    assert error["type"] == "invalid_request_error"
    assert "32000" in error["message"].replace(",", "")
