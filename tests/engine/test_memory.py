"""The memory estimate: the files a model loads, counted before it loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from localimg.backends.base import RuntimeSettings
from localimg.config import load_config_file
from localimg.engine import memory


def write(path: Path, size: int) -> None:
    path.write_bytes(b"\0" * size)


def test_a_ggml_estimate_counts_the_text_encoder_and_vae_files(tmp_path: Path) -> None:
    """stable-diffusion.cpp's LLM and VAE are files of their own: they load too."""
    # The ggml backend's class lists them; the registry hands it out only with its library
    # installed (without it the model cannot load, so there is nothing to estimate).
    pytest.importorskip("stable_diffusion_cpp")
    write(tmp_path / "klein.gguf", 10_000_000)
    write(tmp_path / "qwen3.gguf", 30_000_000)
    write(tmp_path / "vae.gguf", 5_000_000)
    body = (
        "name: klein\nbackend: stablediffusion-ggml\nparameters:\n  model: klein.gguf\n"
        'options:\n- "diffusion_model:true"\n- "llm_path:qwen3.gguf"\n- "vae_path:vae.gguf"\n'
    )
    (tmp_path / "klein.yaml").write_text(body)
    (tmp_path / "alone.yaml").write_text(body.split("options:")[0].replace("klein\n", "alone\n", 1))
    runtime = RuntimeSettings(device="cpu")
    full = memory.estimate(load_config_file(tmp_path / "klein.yaml", tmp_path), runtime)
    alone = memory.estimate(load_config_file(tmp_path / "alone.yaml", tmp_path), runtime)
    assert full is not None and alone is not None
    extra = 35_000_000 * (1 + memory.ACTIVATION_MARGIN)  # the LLM and the VAE
    assert abs(full.bytes - alone.bytes - extra) <= 1
