"""The backend registry: names, aliases, and third-party backends through entry points."""

from __future__ import annotations

import threading
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any, ClassVar

import pytest
from PIL import Image

import localimg.backends as registry
from localimg.backends.base import BackendDefaults, RuntimeSettings
from localimg.config import ModelConfig
from localimg.engine import Engine, EngineSettings
from localimg.errors import ConfigError
from localimg.requests import ImageRequest, ImageResult


class SolidColourBackend:
    """A third-party backend as a plugin package would write one."""

    name: ClassVar[str] = "solid"
    requirements: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str] = ""
    option_keys: ClassVar[frozenset[str]] = frozenset({"colour"})

    def __init__(self, settings: RuntimeSettings) -> None:
        self.colour = "red"

    @classmethod
    def check_request(cls, request: ImageRequest, config: ModelConfig) -> None:
        pass

    def load(self, config: ModelConfig, progress: Any) -> None:
        self.colour = str(config.parsed_options().get("colour", "red"))

    @property
    def defaults(self) -> BackendDefaults:
        return BackendDefaults(width=16, height=8, steps=1, cfg_scale=0)

    def generate(
        self, request: ImageRequest, progress: Any, cancel: threading.Event
    ) -> ImageResult:
        assert request.width and request.height
        images = [Image.new("RGB", (request.width, request.height), self.colour)] * request.n
        return ImageResult(images=images, seeds=request.seeds)

    def unload(self) -> None:
        pass

    def describe(self) -> dict[str, str]:
        return {}


def test_entry_point_backend_is_found_and_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    point = EntryPoint(
        name="solid", value=f"{__name__}:SolidColourBackend", group=registry.ENTRY_POINT_GROUP
    )
    monkeypatch.setattr(
        registry, "entry_points", lambda group: [point] if group == point.group else []
    )
    assert "solid" in registry.backend_names()
    (tmp_path / "s.yaml").write_text(
        "name: s\nbackend: solid\nparameters:\n  model: x\noptions: [colour:blue]\n"
    )
    engine = Engine(EngineSettings(models_path=tmp_path))
    try:
        result = engine.generate("s", ImageRequest("anything", n=2, seed=0))
    finally:
        engine.close()
    assert result.seeds == [0, 1]
    assert result.images[0].size == (16, 8) and result.images[0].getpixel((0, 0)) == (0, 0, 255)


def test_aliases_and_unknown_names() -> None:
    assert registry.canonical_name("ggml") == "stablediffusion-ggml"
    assert registry.canonical_name("Diffusers") == "diffusers"
    with pytest.raises(ConfigError) as err:
        registry.canonical_name("comfy")
    assert "diffusers" in err.value.message and "stablediffusion-ggml" in err.value.message


@pytest.mark.parametrize(
    "pipeline_type", ["StableDiffusionPipeline", "DiffusionPipeline", "AutoPipelineForText2Image"]
)
def test_text_to_image_pipeline_types_load_the_tiny_model(
    tmp_path: Path, tiny_sd: Path, pipeline_type: str
) -> None:
    (tmp_path / "m.yaml").write_text(
        f"name: m\nparameters:\n  model: {tiny_sd}\nstep: 2\n"
        f"diffusers:\n  pipeline_type: {pipeline_type}\n"
    )
    engine = Engine(EngineSettings(models_path=tmp_path))
    try:
        result = engine.generate("m", ImageRequest("otter", seed=1))
        assert engine.slots["m"].backend.describe()["pipeline"] == "StableDiffusionPipeline"  # type: ignore[attr-defined]
    finally:
        engine.close()
    assert result.images[0].size == (64, 64)
