"""localimg/backends/diffusers/load/: how a hub id fails when the hub cannot be reached."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from localimg.errors import ConfigError, ModelUnavailable


def test_unreachable_hub_fails_once_with_the_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A hub id not in the cache, with the hub unreachable (not declared offline): localimg's own
    message at once, without huggingface_hub's retries and their warnings."""
    import huggingface_hub.constants as hf_constants

    from localimg.backends.base import RuntimeSettings
    from localimg.backends.diffusers.backend import DiffusersBackend
    from localimg.config import config_from_dict

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:1")
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.setattr(
        hf_constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        "http://127.0.0.1:1/{repo_id}/resolve/{revision}/{filename}",
    )
    config = config_from_dict(
        {"name": "h", "backend": "diffusers", "parameters": {"model": "localimg-test/not-cached"}},
        where="h.yaml",
        models_path=tmp_path,
    )
    backend = DiffusersBackend(RuntimeSettings(device="cpu"))
    with caplog.at_level(logging.WARNING), pytest.raises(ModelUnavailable) as err:
        backend.load(config, lambda event: None)
    message = err.value.message
    assert "not in the local Hugging Face cache" in message
    assert "--model" in message
    attempts = [r for r in caplog.records if r.name.startswith("huggingface_hub")]
    assert not attempts, [r.getMessage() for r in attempts]


def test_offline_mode_with_an_empty_cache_says_offline_not_a_missing_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HF_HUB_OFFLINE=1 and an empty Hugging Face cache: loading a hub id says the model is not
    in the local cache and offline mode is on (huggingface_hub raises LocalEntryNotFoundError,
    a subclass of its missing-file error), never "no such file in the repository"."""
    from localimg.backends.base import RuntimeSettings
    from localimg.backends.diffusers.backend import DiffusersBackend
    from localimg.config import config_from_dict
    from tests.support.hf_cache import use_cache

    use_cache(monkeypatch, tmp_path, offline=True)
    config = config_from_dict(
        {"name": "h", "backend": "diffusers", "parameters": {"model": "localimg-test/not-cached"}},
        where="h.yaml",
        models_path=tmp_path,
    )
    backend = DiffusersBackend(RuntimeSettings(device="cpu"))
    with pytest.raises(ModelUnavailable) as err:
        backend.load(config, lambda event: None)
    message = err.value.message
    assert "localimg-test/not-cached is not in the local Hugging Face cache" in message
    assert "offline mode is on: HF_HUB_OFFLINE=1" in message
    assert "no such file in the repository" not in message
    assert "--model" in message  # what to do instead


def test_all_localai_pipeline_types_resolve_to_diffusers_classes() -> None:
    from localimg.backends.diffusers.families import FAMILIES
    from localimg.backends.diffusers.load.loading import PIPELINE_TYPES, pipeline_class

    # LocalAI's 12 names, then the families' own classes; the ControlNet pipelines are built
    # over a loaded model (from_pipe), never loaded by pipeline_type
    localai = {
        "StableDiffusionPipeline",
        "StableDiffusionImg2ImgPipeline",
        "StableDiffusionDepth2ImgPipeline",
        "DiffusionPipeline",
        "StableDiffusionXLPipeline",
        "StableVideoDiffusionPipeline",
        "AutoPipelineForText2Image",
        "VideoDiffusionPipeline",
        "StableDiffusion3Pipeline",
        "FluxPipeline",
        "FluxTransformer2DModel",
        "SanaPipeline",
    }
    assert localai <= set(PIPELINE_TYPES)
    loadable = {
        n for n in FAMILIES if not any(k in n for k in ("Img2Img", "Inpaint", "ControlNet"))
    }
    assert loadable | {
        "ZImageImg2ImgPipeline",
        "ZImageInpaintPipeline",
    } <= set(PIPELINE_TYPES)
    for name in PIPELINE_TYPES:
        assert pipeline_class(name) is not None
    with pytest.raises(ConfigError, match="unknown pipeline_type"):
        pipeline_class("NotAPipeline")


def test_an_offline_cache_miss_reads_as_offline_not_as_a_missing_file() -> None:
    """LocalEntryNotFoundError subclasses EntryNotFoundError: loading's words (the same table as
    downloads') must find the offline case first, and add what to do instead."""
    from huggingface_hub import errors as hf_errors

    from localimg.backends.diffusers.load.hub import hub_error
    from localimg.config import ModelSource

    source = ModelSource("hub", "owner/repo")
    offline = hub_error(source, hf_errors.LocalEntryNotFoundError("cache miss"))
    assert isinstance(offline, ModelUnavailable)
    assert "owner/repo is not in the local Hugging Face cache" in offline.message
    assert "--model" in offline.message
    missing = hub_error(source, hf_errors.EntryNotFoundError("404 model_index.json"))
    assert "no such file in the repository (404 model_index.json)" in missing.message
    assert "--model" not in missing.message
    other = hub_error(source, RuntimeError("boom\nmore"))
    assert other.message == "cannot load owner/repo: boom"
