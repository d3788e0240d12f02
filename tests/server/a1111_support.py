"""Shared pieces of the A1111 API tests: the captured client bodies and response checks."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

DATA = Path(__file__).resolve().parent.parent / "data" / "a1111"
# The `info` keys SillyTavern and Open WebUI (which stores it) and A1111 scripts read.
INFO_KEYS = {
    "prompt",
    "all_prompts",
    "negative_prompt",
    "all_negative_prompts",
    "seed",
    "all_seeds",
    "subseed",
    "all_subseeds",
    "subseed_strength",
    "width",
    "height",
    "sampler_name",
    "cfg_scale",
    "steps",
    "batch_size",
    "restore_faces",
    "sd_model_name",
    "sd_model_hash",
    "denoising_strength",
    "extra_generation_params",
    "index_of_first_image",
    "infotexts",
    "styles",
    "job_timestamp",
    "clip_skip",
    "version",
}


def body(name: str, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text(encoding="utf-8"))
    data.update(changes)
    return data


def basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


def post(url: str, path: str, data: dict[str, Any], **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{url}/sdapi/v1/{path}", json=data, timeout=300, **kwargs)


def decode(text: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(text)))
    image.load()
    return image


def pixels(text: str) -> np.ndarray:
    return np.asarray(decode(text).convert("RGB"), dtype=np.int16)


def ok(response: httpx.Response) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
    """A 200 txt2img/img2img answer: (images, info, parameters), shapes checked."""
    assert response.status_code == 200, response.text
    payload = response.json()
    assert set(payload) == {"images", "parameters", "info"}
    assert isinstance(payload["info"], str)  # a JSON *string*, as A1111 sends it
    info = json.loads(payload["info"])
    assert set(info) >= INFO_KEYS, INFO_KEYS - set(info)
    return payload["images"], info, payload["parameters"]


def a1111_error(response: httpx.Response, status: int, mentions: str = "") -> dict[str, Any]:
    """A1111's error shape: {"error", "detail", "body", "errors"}."""
    assert response.status_code == status, response.text
    payload: dict[str, Any] = response.json()
    assert set(payload) == {"error", "detail", "body", "errors"}, payload
    assert mentions in payload["detail"], payload
    return payload
