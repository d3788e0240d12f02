"""diffusers speed options on the tiny model: each takes effect (checked on the loaded pipeline and
in the images) or is refused with a clear error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from localimg.engine import Engine, EngineSettings, InProcessSlot
from localimg.errors import ConfigError
from localimg.requests import ImageRequest, ImageResult
from tests.support.server_support import write_model

REQUEST = ImageRequest(prompt="a windmill", seed=5, steps=2)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, tiny_sd: Path) -> Iterator[Engine]:
    folder = tmp_path_factory.mktemp("speed-models")
    write_model(folder, "plain", tiny_sd)
    write_model(folder, "f16", tiny_sd, "f16: true\n")
    write_model(folder, "nhwc", tiny_sd, "options:\n- channels_last:true\n")
    write_model(folder, "compiled", tiny_sd, "options:\n- compile:true\n")
    engine = Engine(EngineSettings(models_path=folder, keep_alive=None))
    yield engine
    engine.close()


def pipe(engine: Engine, name: str) -> Any:
    slot = engine.slots[name]
    assert isinstance(slot, InProcessSlot) and slot.backend is not None
    return slot.backend.pipe  # type: ignore[attr-defined]


def describe(engine: Engine, name: str) -> dict[str, str]:
    slot = engine.slots[name]
    assert isinstance(slot, InProcessSlot) and slot.backend is not None
    return slot.backend.describe()


def arr(result: ImageResult) -> np.ndarray:
    return np.asarray(result.images[0].convert("RGB"), dtype=np.int16)


def test_sdpa_attention_is_the_default(engine: Engine) -> None:
    engine.generate("plain", REQUEST)
    info = describe(engine, "plain")
    assert info["attention"] == "sdpa" and info["compiled"] == "no"
    processors = pipe(engine, "plain").unet.attn_processors.values()
    assert {type(p).__name__ for p in processors} == {"AttnProcessor2_0"}


def test_f16_is_bfloat16_on_a_cpu_with_native_bf16(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.setenv("LOCALIMG_CPU_BF16", "1")
    result = engine.generate("f16", REQUEST)
    assert describe(engine, "f16")["dtype"] == "bfloat16"
    assert pipe(engine, "f16").unet.dtype == torch.bfloat16
    plain = engine.generate("plain", REQUEST)
    # bfloat16 keeps 8 bits of mantissa: the same picture, not the same pixels.
    assert np.abs(arr(result) - arr(plain)).mean() < 20


def test_channels_last_takes_effect(engine: Engine) -> None:
    import torch

    result = engine.generate("nhwc", REQUEST)
    piped = pipe(engine, "nhwc")
    for module in (piped.unet, piped.vae):
        convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
        assert convs and all(
            c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs
        )
    plain = engine.generate("plain", REQUEST)
    assert np.abs(arr(result) - arr(plain)).max() <= 2  # same math, another memory layout


def test_compile_wraps_the_unet_and_generates(engine: Engine) -> None:
    from torch._dynamo.eval_frame import OptimizedModule

    engine.load("compiled")
    assert isinstance(pipe(engine, "compiled").unet, OptimizedModule)
    assert describe(engine, "compiled")["compiled"] == "yes"


def test_compile_without_a_cpp_compiler_is_refused(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    engine.unload("compiled")
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="compile on the CPU needs a C\\+\\+ compiler"):
        engine.load("compiled")


def test_unknown_speed_option_lists_the_allowed_ones(tmp_path: Path, tiny_sd: Path) -> None:
    write_model(tmp_path, "typo", tiny_sd, "options:\n- channel_last:true\n")
    engine = Engine(EngineSettings(models_path=tmp_path, keep_alive=None))
    try:
        with pytest.raises(Exception, match="channel_last"):
            engine.generate("typo", REQUEST)
    finally:
        engine.close()
