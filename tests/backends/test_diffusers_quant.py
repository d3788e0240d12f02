"""Quantized weights on the diffusers backend (GGUF transformer files, torchao int8, fp8 storage),
on the tiny random models: each takes effect (checked on the loaded modules and in the images),
keeps the picture close to the unquantized one, and invalid combinations are refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from localimg.backends.diffusers.backend import DiffusersBackend
from localimg.config import config_from_dict
from localimg.engine import Engine, EngineSettings, InProcessSlot
from localimg.errors import ConfigError
from localimg.requests import ImageRequest, ImageResult
from tests.support.server_support import write_model
from tests.support.tiny_families import TinyFamily
from tests.support.tiny_quant import qwen_base, wide_qwen_transformer, write_gguf

REQUEST = ImageRequest(prompt="a windmill", seed=5, steps=3)
QWEN_REQUEST = ImageRequest(prompt="a windmill", seed=5, steps=3, width=64, height=64)


def arr(result: ImageResult) -> np.ndarray:
    return np.asarray(result.images[0].convert("RGB"), dtype=np.int16)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a - b).astype(np.float64) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def backend_of(engine: Engine, name: str) -> Any:
    slot = engine.slots[name]
    assert isinstance(slot, InProcessSlot) and slot.backend is not None
    return slot.backend


@pytest.fixture(scope="module")
def models(
    tmp_path_factory: pytest.TempPathFactory, tiny_sd: Path, tiny_family: TinyFamily
) -> Path:
    folder = tmp_path_factory.mktemp("quant-models")
    base = qwen_base(tiny_family("qwen_image"), folder / "qwen-base")
    write_gguf(wide_qwen_transformer(), folder / "qwen-Q8_0.gguf")
    qwen = "name: {}\nbackend: diffusers\nparameters:\n  model: {}\nstep: 3\n{}"
    (folder / "qwen.yaml").write_text(qwen.format("qwen", base, ""), encoding="utf-8")
    (folder / "qwen-gguf.yaml").write_text(
        qwen.format("qwen-gguf", "qwen-Q8_0.gguf", "options:\n- base_model:qwen-base\n"),
        encoding="utf-8",
    )
    (folder / "qwen-gguf-config.yaml").write_text(
        qwen.format("qwen-gguf-config", "qwen-Q8_0.gguf", f"options:\n- config:{base}\n"),
        encoding="utf-8",
    )
    write_model(folder, "plain", tiny_sd)
    write_model(folder, "int8", tiny_sd, "options:\n- quantization:int8\n")
    write_model(folder, "fp8", tiny_sd, "options:\n- quantization:fp8\n")
    write_model(folder, "bf16", tiny_sd, "options:\n- dtype:bfloat16\n")
    write_model(folder, "int8-bf16", tiny_sd, "options:\n- quantization:int8\n- dtype:bf16\n")
    return folder


@pytest.fixture(scope="module")
def engine(models: Path) -> Iterator[Engine]:
    engine = Engine(EngineSettings(models_path=models, keep_alive=None, max_loaded_models=2))
    yield engine
    engine.close()


# --- GGUF -----------------------------------------------------------------------------------


def test_a_gguf_transformer_loads_quantized_and_keeps_the_picture(engine: Engine) -> None:
    from diffusers.quantizers.gguf.utils import GGUFParameter

    full = arr(engine.generate("qwen", QWEN_REQUEST))
    quantized = arr(engine.generate("qwen-gguf", QWEN_REQUEST))
    backend = backend_of(engine, "qwen-gguf")
    transformer = backend.pipe.transformer
    to_q = transformer.transformer_blocks[0].attn.to_q
    assert type(to_q).__name__ == "GGUFLinear" and isinstance(to_q.weight, GGUFParameter)
    assert backend.describe()["weights"] == "gguf"
    assert quantized.shape == full.shape == (64, 64, 3)
    assert not np.array_equal(quantized, full)  # the weights really are the Q8_0 ones
    assert psnr(quantized, full) > 30, psnr(quantized, full)


def test_config_names_the_base_as_well(engine: Engine) -> None:
    by_base = arr(engine.generate("qwen-gguf", QWEN_REQUEST))
    by_config = arr(engine.generate("qwen-gguf-config", QWEN_REQUEST))
    assert np.array_equal(by_base, by_config)


def _load(models: Path, name: str, model: str, options: list[str]) -> None:
    from localimg.backends.base import RuntimeSettings

    config = config_from_dict(
        {"name": name, "backend": "diffusers", "parameters": {"model": model}, "options": options},
        where=f"{name}.yaml",
        models_path=models,
    )
    DiffusersBackend(RuntimeSettings(device="cpu")).load(config, lambda _event: None)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ([], "base_model"),
        (["base_model:qwen-base", "config:other"], "disagree"),
        (["base_model:qwen-base", "quantization:int8"], "quantized already"),
        (["base_model:qwen-base", "quantization:fp8"], "quantized already"),
    ],
)
def test_gguf_refusals(models: Path, options: list[str], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        _load(models, "bad", "qwen-Q8_0.gguf", options)


# --- int8 and fp8 ---------------------------------------------------------------------------


def test_int8_quantizes_the_unet_and_text_encoder(engine: Engine) -> None:
    import torch

    plain = arr(engine.generate("plain", REQUEST))
    result = arr(engine.generate("int8", REQUEST))
    pipe = backend_of(engine, "int8").pipe
    for module in (pipe.unet, pipe.text_encoder):
        linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
        assert linears and all(type(m.weight).__name__ == "Int8Tensor" for m in linears)
    assert type(pipe.vae.decoder.conv_in.weight) is torch.nn.Parameter  # the VAE keeps float
    assert backend_of(engine, "int8").describe()["weights"] == "int8"
    assert not np.array_equal(result, plain)
    assert psnr(result, plain) > 30, psnr(result, plain)


def test_int8_in_bfloat16_quantizes_while_loading(engine: Engine) -> None:
    """diffusers' loader quantizes each weight as it reads it (the model never sits in memory
    at 2 bytes a weight): the same int8 weights as quantizing afterwards."""
    import torch

    plain = arr(engine.generate("bf16", REQUEST))
    result = arr(engine.generate("int8-bf16", REQUEST))
    pipe = backend_of(engine, "int8-bf16").pipe
    assert pipe.unet.hf_quantizer is not None  # the loader did it
    for module in (pipe.unet, pipe.text_encoder):
        linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
        assert linears and all(type(m.weight).__name__ == "Int8Tensor" for m in linears)
    assert pipe.unet.dtype == pipe.vae.dtype == torch.bfloat16
    assert not np.array_equal(result, plain)
    assert psnr(result, plain) > 30, psnr(result, plain)


def test_fp8_stores_weights_in_float8_and_computes_in_the_dtype(engine: Engine) -> None:
    import torch

    plain = arr(engine.generate("plain", REQUEST))
    result = arr(engine.generate("fp8", REQUEST))
    pipe = backend_of(engine, "fp8").pipe
    linears = [m for m in pipe.unet.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(m.weight.dtype == torch.float8_e4m3fn for m in linears)
    assert pipe.unet.dtype == torch.float32  # what the pipeline computes in
    assert pipe.text_encoder.dtype == pipe.vae.dtype == torch.float32
    assert not np.array_equal(result, plain)
    # e4m3 keeps 3 bits of mantissa: the same picture, coarser pixels.
    assert psnr(result, plain) > 20, psnr(result, plain)


def test_quantized_weights_count_one_byte_in_the_memory_budget(models: Path) -> None:
    def itemsize(options: list[str], f16: bool = False) -> int | None:
        config = config_from_dict(
            {"name": "m", "parameters": {"model": "x"}, "options": options, "f16": f16},
            where="m.yaml",
            models_path=models,
        )
        return DiffusersBackend.weight_itemsize(config, "ram")

    assert itemsize(["quantization:int8"]) == 1
    assert itemsize(["quantization:fp8"]) == 1
    assert itemsize(["quantization:int8", "dtype:float32"]) == 1
    assert itemsize([]) == 4
    assert itemsize(["dtype:bfloat16"]) == 2


def test_an_unknown_quantization_is_refused(models: Path, tiny_sd: Path) -> None:
    with pytest.raises(ConfigError, match=r"int8.*fp8"):
        _load(models, "bad", str(tiny_sd), ["quantization:int4"])
