"""Half-precision loading reads each tensor alone (load/streamed_weights.py): the same weights
as diffusers' and transformers' own loading, with no float32 copy of a whole file kept alive."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from localimg.backends.diffusers.load import streamed_weights
from localimg.backends.diffusers.load.streamed_weights import StreamedSafetensors


def test_the_streamed_state_dict_reads_what_safetensors_reads(tmp_path: Path) -> None:
    tensors = {
        "a.weight": torch.randn(3, 5),
        "b.bf16": torch.randn(4, 2).to(torch.bfloat16),
        "c.half": torch.randn(7).to(torch.float16),
        "d.ids": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "e.empty": torch.empty(0, 4),
        "f.scalar": torch.tensor(2.5),
    }
    path = tmp_path / "w.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    streamed = StreamedSafetensors(path)
    expected = load_file(str(path))
    assert sorted(streamed) == sorted(expected) and len(streamed) == len(expected)
    for key, value in expected.items():
        got = streamed[key]
        assert got.dtype == value.dtype and got.shape == value.shape
        assert torch.equal(got, value), key
    assert "a.weight" in streamed and "nope" not in streamed
    # diffusers renames old keys in place: set, pop and delete work like a dict
    streamed["renamed"] = streamed.pop("a.weight")
    del streamed["b.bf16"]
    assert "a.weight" not in streamed and "b.bf16" not in streamed
    assert torch.equal(streamed["renamed"], expected["a.weight"])
    assert len(streamed) == len(expected) - 1


def test_the_reader_is_used_only_while_a_half_precision_load_streams(tmp_path: Path) -> None:
    from diffusers.models import model_loading_utils, modeling_utils

    path = tmp_path / "w.safetensors"
    save_file({"x": torch.ones(2)}, str(path))
    assert streamed_weights.install()
    for module in (modeling_utils, model_loading_utils):
        assert not isinstance(module.load_state_dict(str(path)), StreamedSafetensors)
        with streamed_weights.streaming(True):
            assert isinstance(module.load_state_dict(str(path)), StreamedSafetensors)
            kept = module.load_state_dict(str(path), disable_mmap=True)
            assert not isinstance(kept, StreamedSafetensors)
        with streamed_weights.streaming(False):
            assert not isinstance(module.load_state_dict(str(path)), StreamedSafetensors)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_pipeline_loads_the_same_weights_streamed(tiny_sd: Path, dtype: torch.dtype) -> None:
    from diffusers import StableDiffusionPipeline

    plain = StableDiffusionPipeline.from_pretrained(tiny_sd, dtype=dtype, safety_checker=None)
    with streamed_weights.streaming(True):
        streamed = StableDiffusionPipeline.from_pretrained(
            tiny_sd, dtype=dtype, safety_checker=None
        )
    for name in ("unet", "vae", "text_encoder"):
        mine = dict(getattr(streamed, name).state_dict())
        theirs = dict(getattr(plain, name).state_dict())
        assert mine.keys() == theirs.keys(), name
        for key, value in theirs.items():
            assert mine[key].dtype == value.dtype, (name, key)
            assert torch.equal(mine[key], value), (name, key)


def test_backend_load_streams_half_precision_and_generates_the_same_image(
    tiny_sd: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """f16: true on a CPU with bfloat16 loads through the reader; the image is the one diffusers'
    own bfloat16 loading gives."""
    from localimg.backends.base import RuntimeSettings
    from localimg.backends.diffusers.backend import DiffusersBackend
    from localimg.config import config_from_dict
    from localimg.requests import ImageRequest

    monkeypatch.setenv("LOCALIMG_CPU_BF16", "1")
    config = config_from_dict(
        {"name": "half", "f16": True, "parameters": {"model": str(tiny_sd)}},
        where="half.yaml",
        models_path=tmp_path,
    )
    images = []
    for stream in (True, False):
        if not stream:
            monkeypatch.setattr(streamed_weights, "install", lambda: False)
        backend = DiffusersBackend(RuntimeSettings(device="cpu"))
        backend.load(config, lambda event: None)
        assert backend.dtype == torch.bfloat16
        request = ImageRequest(
            prompt="an otter", width=64, height=64, steps=2, seed=3, cfg_scale=5.0
        )
        result = backend.generate(request, lambda event: None, threading.Event())
        images.append(result.images[0].tobytes())
    assert images[0] == images[1]


def test_transformers_reads_serially_with_pread_only_while_streaming(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """transformers' own loader: pread instead of a memory map, and no reading thread pool, only
    inside a half-precision load; the user's setting of the variable comes back after."""
    from transformers import modeling_utils

    assert streamed_weights.install()
    assert hasattr(modeling_utils.safe_open, "streamed_original")  # installed in transformers
    seen: list[str] = []
    opened = streamed_weights._pread_open(lambda *a, **kw: seen.append(kw["backend"]))
    monkeypatch.setenv(streamed_weights.SERIAL_LOAD_VARIABLE, "0")
    opened("f", framework="pt", device="cpu", backend="mmap")
    with streamed_weights.streaming(True):
        opened("f", framework="pt", device="cpu", backend="mmap")
        opened("f", framework="pt", device="mps", backend="pread")
        assert os.environ[streamed_weights.SERIAL_LOAD_VARIABLE] == "1"
    assert os.environ[streamed_weights.SERIAL_LOAD_VARIABLE] == "0"
    assert seen == ["mmap", "pread", "pread"]
