"""localimg/backends/base.py: capabilities and the weight-size hook, with their defaults for
plugin classes that predate them; the engine's memory estimate asks the backend through them."""

from __future__ import annotations

from pathlib import Path

import pytest

from localimg.backends.base import (
    BatchBackend,
    Capabilities,
    RuntimeSettings,
    capabilities_of,
    weight_itemsize_of,
)
from localimg.config import ModelConfig, config_from_dict


class OldPlugin:
    """A third-party backend written before capabilities and weight_itemsize existed."""

    name = "old"


def diffusers_config(tmp_path: Path, **extra: object) -> ModelConfig:
    data = {"name": "m", "backend": "diffusers", "parameters": {"model": "owner/name"}, **extra}
    return config_from_dict(data, where="m.yaml", models_path=tmp_path)


def test_a_class_without_capabilities_has_none_of_the_optional_ones() -> None:
    assert capabilities_of(OldPlugin) == Capabilities()
    assert capabilities_of(OldPlugin).batch is False


def test_builtin_backends_declare_what_they_can_do() -> None:
    from localimg.backends.diffusers.backend import DiffusersBackend

    assert capabilities_of(DiffusersBackend).batch is True
    ggml = pytest.importorskip("localimg.backends.ggml.backend")
    assert capabilities_of(ggml.GgmlBackend).batch is False


def test_a_backend_that_batches_is_a_batch_backend_and_one_that_does_not_is_not() -> None:
    """The engine hands a batch only to a BatchBackend (an isinstance check, typed)."""
    from localimg.backends.diffusers.backend import DiffusersBackend

    assert isinstance(DiffusersBackend(RuntimeSettings()), BatchBackend)
    assert not isinstance(OldPlugin(), BatchBackend)
    ggml = pytest.importorskip("localimg.backends.ggml.backend")
    assert not isinstance(ggml.GgmlBackend(RuntimeSettings()), BatchBackend)


def test_weight_itemsize_defaults_to_as_stored(tmp_path: Path) -> None:
    assert weight_itemsize_of(OldPlugin, diffusers_config(tmp_path), "vram") is None


def test_diffusers_weight_itemsize_follows_the_dtype_it_will_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from localimg.backends.diffusers.backend import DiffusersBackend

    def size(where: str, **extra: object) -> int | None:
        return weight_itemsize_of(DiffusersBackend, diffusers_config(tmp_path, **extra), where)

    assert size("ram", options=["dtype:bf16"]) == 2
    assert size("vram", options=["dtype:float32"], f16=True) == 4
    assert size("vram", f16=True) == 2
    assert size("vram") == 2  # f16 absent: half precision on a GPU
    assert size("vram", f16=False) == 4
    assert size("ram") == 4  # and float32 on a CPU
    monkeypatch.setenv("LOCALIMG_CPU_BF16", "0")
    assert size("ram", f16=True) == 4
    monkeypatch.setenv("LOCALIMG_CPU_BF16", "1")
    assert size("ram", f16=True) == 2


def test_memory_estimate_asks_the_backend_and_skips_one_not_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import localimg.backends as registry
    from localimg.engine.memory import load_itemsize

    assert load_itemsize(diffusers_config(tmp_path, f16=True), "vram") == 2
    ggml = config_from_dict(
        {"name": "g", "backend": "stablediffusion-ggml", "parameters": {"model": "m.gguf"}},
        where="g.yaml",
        models_path=tmp_path,
    )
    monkeypatch.setitem(registry.BUILTIN, "stablediffusion-ggml", "localimg.backends.absent:X")
    assert load_itemsize(ggml, "ram") is None
