"""The memory estimate: the files a model loads, counted before it loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from localimg.backends.base import RuntimeSettings
from localimg.config import ModelConfig, load_config_file
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


# -- hub models: from the local Hugging Face cache, never downloaded ---------------------------

SD_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": "0.30.0",
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
    "feature_extractor": [None, None],
}


def tensors(folder: Path, name: str, elements: int, dtype: str = "float16") -> None:
    """A small safetensors file of `elements` numbers in `dtype`, with a config.json beside."""
    import json

    import numpy as np
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({"weight": np.zeros((elements,), dtype=dtype)}, str(folder / name))
    (folder / "config.json").write_text(json.dumps({"_class_name": "X"}))


def cached_sd_repo(cache: Path, repo: str) -> Path:
    """A diffusers repo in the cache's layout: plain and fp16 weights (different sizes, so the
    test sees which set was read), components loading skips, and a root-level checkpoint."""
    import json

    from tests.support.hf_cache import snapshot

    files = snapshot(cache, repo)
    (files / "model_index.json").write_text(json.dumps(SD_INDEX))
    for component, plain_name, elements in (
        ("unet", "diffusion_pytorch_model", 3000),
        ("vae", "diffusion_pytorch_model", 500),
        ("text_encoder", "model", 1000),
    ):
        tensors(files / component, f"{plain_name}.safetensors", elements, "float32")
        tensors(files / component, f"{plain_name}.fp16.safetensors", elements // 2)
    for component in ("tokenizer", "scheduler"):
        (files / component).mkdir()
        (files / component / f"{component}_config.json").write_text("{}")
    tensors(files / "safety_checker", "model.safetensors", 100_000)  # loading passes None
    tensors(files, "whole-checkpoint.safetensors", 200_000)  # not what from_pretrained reads
    return files


def hub_config(tmp_path: Path, *options: str) -> ModelConfig:
    from localimg.config import config_from_dict

    data = {"name": "turbo", "parameters": {"model": "owner/turbo"}, "options": list(options)}
    return config_from_dict(data, where="turbo.yaml", models_path=tmp_path / "models")


def test_a_cached_hub_model_is_estimated_from_its_cached_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hub id in the local cache: the components model_index.json names (not the safety
    checker, not a root-level checkpoint), the `variant:` files where configured, at the dtype
    loading will use; offline, with nothing downloaded."""
    from tests.support.hf_cache import use_cache

    cached_sd_repo(use_cache(monkeypatch, tmp_path, offline=True), "owner/turbo")
    runtime = RuntimeSettings(device="cpu")
    plain, fp16 = hub_config(tmp_path), hub_config(tmp_path, "variant:fp16")
    itemsize = memory.load_itemsize(plain, "ram")
    assert itemsize is not None  # the diffusers backend casts floats to its dtype
    for config, elements in ((plain, 3000 + 500 + 1000), (fp16, 1500 + 250 + 500)):
        need = memory.estimate(config, runtime)
        expected = int(elements * itemsize * (1 + memory.ACTIVATION_MARGIN))
        assert need == memory.Need(expected + memory.RUNTIME_OVERHEAD, "ram")


def test_no_estimate_says_why_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Not in the cache, or the cache lacks a component's weights: no estimate, and one INFO line
    saying why (DEBUG when the budget asks again), never silence."""
    import logging

    from tests.support.hf_cache import use_cache

    cache = use_cache(monkeypatch, tmp_path, offline=True)
    monkeypatch.setattr(memory, "_TOLD", set())  # what earlier tests had logged
    runtime = RuntimeSettings(device="cpu")
    config = hub_config(tmp_path)
    with caplog.at_level(logging.DEBUG, logger="localimg.engine.memory"):
        assert memory.estimate(config, runtime) is None
        assert memory.estimate(config, runtime) is None
    said = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == memory.log.name]
    assert [level for level, _ in said] == [logging.INFO, logging.DEBUG]
    assert "no estimate for model 'turbo'" in said[0][1]
    assert "owner/turbo is not in the local Hugging Face cache" in said[0][1]
    assert "nothing is downloaded for an estimate" in said[0][1]

    files = cached_sd_repo(cache, "owner/turbo")
    for weights in (files / "unet").glob("*.safetensors"):
        weights.unlink()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="localimg.engine.memory"):
        assert memory.estimate(config, runtime) is None
    said = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == memory.log.name]
    assert len(said) == 1 and said[0][0] == logging.INFO
    assert "owner/turbo's unet weights are not in the local Hugging Face cache" in said[0][1]
