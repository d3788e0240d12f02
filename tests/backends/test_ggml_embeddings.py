"""Textual-inversion embeddings on stable-diffusion.cpp: the files of `embeddings/` that fit the
tiny SD1 checkpoint's 768-wide CLIP are handed to the library (the binding's 0.4.7 defect
worked around in native.py), so a name in the prompt changes the image; another width is
skipped with a log line and generation works."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("stable_diffusion_cpp")

import torch
from safetensors.torch import save_file

from localimg.engine import Engine, EngineSettings
from localimg.requests import ImageRequest, ImageResult
from tests.support.tiny_ggml import populate_models_dir

pytestmark = pytest.mark.ggml

PROMPT = "a red fox foxstyle widestyle"


def generate(folder: Path, prompt: str = PROMPT) -> ImageResult:
    engine = Engine(EngineSettings(models_path=folder))
    try:
        return engine.generate("stablediffusion", ImageRequest(prompt, seed=5))
    finally:
        engine.close()


def pixels(result: ImageResult) -> np.ndarray:
    return np.asarray(result.images[0].convert("RGB"), dtype=np.int16)


def test_a_fitting_embedding_changes_the_image_and_another_width_is_skipped(
    tmp_path: Path, tiny_ggml: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    plain_dir = populate_models_dir(tmp_path / "plain", tiny_ggml)
    with_dir = populate_models_dir(tmp_path / "with", tiny_ggml)
    folder = with_dir / "embeddings"
    folder.mkdir()
    vectors = torch.randn(2, 768, generator=torch.Generator().manual_seed(4)) * 2
    save_file({"emb_params": vectors}, str(folder / "foxstyle.safetensors"))
    save_file({"emb_params": torch.randn(1, 1024)}, str(folder / "widestyle.safetensors"))
    with caplog.at_level(logging.INFO, logger="localimg"):
        used = generate(with_dir)
    plain = generate(plain_dir)
    assert np.abs(pixels(used) - pixels(plain)).max() > 0
    skipped = [r.getMessage() for r in caplog.records if "'widestyle' skipped" in r.getMessage()]
    assert len(skipped) == 1 and "1024" in skipped[0]
    assert not any("'foxstyle' skipped" in r.getMessage() for r in caplog.records)
    # a prompt that does not name the embedding: the same image as without the folder
    assert np.array_equal(
        pixels(generate(with_dir, "a red fox")), pixels(generate(plain_dir, "a red fox"))
    )


def test_a_lora_tag_gives_lora_hashes(tmp_path: Path, tiny_ggml: dict[str, Path]) -> None:
    """(here for want of a ggml test module of A1111 infotext: the tiny files are at hand)"""
    import hashlib

    folder = populate_models_dir(tmp_path / "models", tiny_ggml)
    result = generate(folder, "a red fox <lora:loras/mylora:0.5>")
    data = (folder / "loras" / "mylora.safetensors").read_bytes()
    expected = hashlib.sha256(data[8 + int.from_bytes(data[:8], "little") :]).hexdigest()[:12]
    assert result.infotext == {"Lora hashes": f"loras/mylora: {expected}"}
