"""The gallery entries of the 2025-26 families (issue 13) and the `memory:` key they declare.

Offline: nothing here downloads. Each entry is resolved from the shipped index the way `models
install` resolves it, then checked against what the backends really accept (their option lists,
the diffusers pipeline classes), and its declared memory is followed through `gallery list
--json`, the engine's estimate and the `--max-memory` budget.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from localimg._util.units import parse_bytes
from localimg.backends.base import RuntimeSettings
from localimg.config import HUB_ID, ModelConfig, config_from_dict, load_config_file
from localimg.config.options import OPTION_ALIASES
from localimg.download import parse_uri
from localimg.engine import Engine, EngineSettings, memory
from localimg.engine.lifecycle import Budget
from localimg.errors import ConfigError, InsufficientMemory
from localimg.gallery import build as gallery_build
from localimg.gallery import catalog as gallery
from localimg.gallery.catalog import Catalog, GalleryEntry, resolve_entry
from localimg.requests import ImageRequest
from tests.support.server_support import write_model

# name → (backend, pipeline class or None, declared memory)
FAMILY_ENTRIES: dict[str, tuple[str, str | None, str]] = {
    "z-image-turbo": ("diffusers", "ZImagePipeline", "22G"),
    "z-image-turbo-ggml": ("stablediffusion-ggml", None, "8G"),
    "flux.2-klein-4b": ("diffusers", "Flux2KleinPipeline", "17G"),
    "flux.2-klein-4b-ggml": ("stablediffusion-ggml", None, "7G"),
    "flux.2-klein-9b-ggml": ("stablediffusion-ggml", None, "12G"),
    "flux.2-dev-ggml": ("stablediffusion-ggml", None, "38G"),
    "qwen-image": ("diffusers", "QwenImagePipeline", "60G"),
    "qwen-image-ggml": ("stablediffusion-ggml", None, "18G"),
    "qwen-image-edit-2511": ("diffusers", "QwenImageEditPlusPipeline", "60G"),
    "qwen-image-edit-2511-ggml": ("stablediffusion-ggml", None, "21G"),
    "flux.1-kontext-dev-ggml": ("stablediffusion-ggml", None, "19G"),
    "chroma1-hd": ("diffusers", "ChromaPipeline", "16G"),
    "wan2.2-ti2v-5b": ("diffusers", "WanPipeline", "16G"),
    "wan2.2-ti2v-5b-ggml": ("stablediffusion-ggml", None, "14G"),
}
# The option naming the LLM text encoder, per ggml entry: the family's encoder, not any file.
LLM_FILES = {
    "z-image-turbo-ggml": "Qwen3-4B.Q4_K_M.gguf",
    "flux.2-klein-4b-ggml": "Qwen3-4B-Q4_K_M.gguf",
    "flux.2-klein-9b-ggml": "Qwen3-8B-Q4_K_M.gguf",
    "flux.2-dev-ggml": "Mistral-Small-3.2-24B-Instruct-2506-Q4_K_M.gguf",
    "qwen-image-ggml": "Qwen2.5-VL-7B-Instruct-Q4_K_M.gguf",
    "qwen-image-edit-2511-ggml": "Qwen2.5-VL-7B-Instruct-Q4_K_M.gguf",
}


@pytest.fixture(scope="module")
def shipped() -> Catalog:
    return Catalog.load(gallery.default_sources(builtin=True))


def _config(entry: GalleryEntry) -> ModelConfig:
    return config_from_dict(dict(resolve_entry(entry).config), where=entry.name)


def _option_keys(backend: str) -> frozenset[str]:
    """The options the backend consumes; skipped where that backend cannot be imported."""
    if backend == "stablediffusion-ggml":
        pytest.importorskip("stable_diffusion_cpp")
        from localimg.backends.ggml.options import OPTION_KEYS as ggml_keys

        return ggml_keys
    from localimg.backends.diffusers.options import OPTION_KEYS as diffusers_keys

    return diffusers_keys


@pytest.mark.parametrize("name", sorted(FAMILY_ENTRIES))
def test_entry_is_in_the_built_index(name: str, shipped: Catalog) -> None:
    index = yaml.safe_load(gallery_build.build_index())
    assert name in {item["name"] for item in index}
    entry = shipped.find(name)
    assert entry.license and entry.urls and entry.description
    assert gallery.is_image_entry(entry)


@pytest.mark.parametrize("name", sorted(FAMILY_ENTRIES))
def test_entry_loads_as_a_model_config_the_backend_accepts(
    name: str, shipped: Catalog, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    backend, pipeline, declared = FAMILY_ENTRIES[name]
    resolved = resolve_entry(shipped.find(name))
    # The YAML the install writes, read back as the models directory reads it: no warnings.
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(resolved.config, allow_unicode=True), encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        config = load_config_file(path)
    assert [r.getMessage() for r in caplog.records] == []
    assert not config.model_extra and not config.parameters.model_extra
    assert config.backend == backend
    assert config.memory_bytes == parse_bytes(declared)
    unknown = set(config.parsed_options()) - _option_keys(backend) - set(OPTION_ALIASES)
    assert not unknown, f"{name}: options the {backend} backend does not know: {unknown}"
    if backend == "diffusers":
        from localimg.backends.diffusers import options as diffusers_options
        from localimg.backends.diffusers.load.loading import pipeline_class

        assert config.diffusers.pipeline_type == pipeline
        assert pipeline_class(str(pipeline)).__name__ == pipeline
        assert diffusers_options.parse_options(config).dtype == "bfloat16"
        assert config.model and HUB_ID.match(config.model)
    else:
        from localimg.backends.ggml import options as ggml_options

        parsed = ggml_options.parse_options(config)
        assert parsed.diffusion_model and parsed.vae_path
        assert parsed.offload_params_to_cpu or parsed.keep_clip_on_cpu  # low-VRAM defaults


@pytest.mark.parametrize("name", sorted(n for n in FAMILY_ENTRIES if n.endswith("-ggml")))
def test_ggml_entry_ships_every_file_it_names_from_the_hub(name: str, shipped: Catalog) -> None:
    resolved = resolve_entry(shipped.find(name))
    shipped_files = {f.filename: f for f in resolved.files}
    named = [str(resolved.config["parameters"]["model"])]
    for option in resolved.config.get("options") or []:
        key, _, value = str(option).partition(":")
        if key.endswith("_path"):
            named.append(value)
    assert set(named) == set(shipped_files), "every file is named by an option and vice versa"
    for item in resolved.files:
        source = parse_uri(item.uri)
        assert source.kind == "hub", item.uri  # so a file without sha256 is checked by its etag
        assert source.path_in_repo.rsplit("/", 1)[-1] == item.filename
        assert item.sha256 or item.sha256_reason
    options = dict(str(o).partition(":")[::2] for o in resolved.config.get("options") or [])
    if name in LLM_FILES:
        assert options["llm_path"] == LLM_FILES[name]


def test_qwen_edit_2511_ggml_sets_what_sd_cpp_says_2511_needs(shipped: Catalog) -> None:
    options = _config(shipped.find("qwen-image-edit-2511-ggml")).parsed_options()
    assert options["qwen_image_zero_cond_t"] is True
    assert options["reference_edit"] is True  # loads as the same network as Qwen-Image
    assert options["llm_vision_path"] == "mmproj-F16.gguf"
    assert options["flow_shift"] == 3 and options["sampler"] == "euler"


def test_kontext_ggml_is_marked_as_the_reference_edit_model(shipped: Catalog) -> None:
    options = _config(shipped.find("flux.1-kontext-dev-ggml")).parsed_options()
    assert options["reference_edit"] is True and options["guidance"] == 2.5


def test_model_card_defaults(shipped: Catalog) -> None:
    """Steps, guidance and size as the model cards and stable-diffusion.cpp's docs give them."""
    expect = {
        "z-image-turbo": (8, 0, "1024x1024"),
        "z-image-turbo-ggml": (8, 1, "1024x1024"),
        "flux.2-klein-4b": (4, 1, "1024x1024"),
        "flux.2-klein-4b-ggml": (4, 1, "1024x1024"),
        "flux.2-klein-9b-ggml": (4, 1, "1024x1024"),
        "qwen-image": (50, 4, "1328x1328"),
        "qwen-image-edit-2511": (40, 4, None),
        "chroma1-hd": (40, 3, "1024x1024"),
        "wan2.2-ti2v-5b": (50, 5, "1280x704"),
        "wan2.2-ti2v-5b-ggml": (20, 6, "480x832"),
    }
    for name, (steps, cfg, size) in expect.items():
        config = _config(shipped.find(name))
        assert (config.step, config.cfg_scale, config.size) == (steps, cfg, size), name


# -- the memory key -----------------------------------------------------------------------------


def test_memory_key_parses_and_refuses_what_is_not_a_size() -> None:
    config = config_from_dict({"name": "m", "memory": "14G"}, where="m.yaml")
    assert config.memory_bytes == 14 * 1024**3
    assert config_from_dict({"name": "m", "memory": 1024}, where="m").memory_bytes == 1024
    assert config_from_dict({"name": "m"}, where="m").memory_bytes is None
    for bad, says in (("lots", "12G"), ("-3G", "12G"), ("0", "more than 0 bytes")):
        with pytest.raises(ConfigError, match=rf"m\.yaml: key 'memory': .*{says}"):
            config_from_dict({"name": "m", "memory": bad}, where="m.yaml")


def test_gallery_list_json_shows_each_entry_memory(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from localimg.cli import app

    result = CliRunner().invoke(app, ["gallery", "list", "--json", "--models-path", str(tmp_path)])
    assert result.exit_code == 0, result.output
    listed: dict[str, Any] = {item["name"]: item for item in json.loads(result.stdout)}
    for name, (_, _, declared) in FAMILY_ENTRIES.items():
        assert listed[name]["memory"] == declared
        assert listed[name]["memory_bytes"] == parse_bytes(declared)
    table = CliRunner().invoke(app, ["gallery", "list", "--models-path", str(tmp_path)])
    assert table.exit_code == 0 and "memory" in table.stdout and "22G" in table.stdout


def test_estimate_is_the_declared_memory_even_for_a_hub_model() -> None:
    runtime = RuntimeSettings(device="cpu")
    hub = config_from_dict(
        {"name": "z", "parameters": {"model": "Tongyi-MAI/Z-Image-Turbo"}}, where="z"
    )
    assert memory.estimate(hub, runtime) is None  # not in the cache: nothing to read
    declared = config_from_dict({**hub.model_dump(), "memory": "22G"}, where="z")
    assert memory.estimate(declared, runtime) == memory.Need(22 * 1024**3, "ram")
    on_gpu = memory.estimate(declared, RuntimeSettings(device="cuda"))
    assert on_gpu == memory.Need(22 * 1024**3, "vram")


def test_declared_memory_is_what_the_header_estimate_is_replaced_by(tiny_sd: Path) -> None:
    runtime = RuntimeSettings(device="cpu")
    local = config_from_dict({"name": "t", "parameters": {"model": str(tiny_sd)}}, where="t")
    estimated = memory.estimate(local, runtime)
    assert estimated is not None and estimated.bytes > 0
    small = config_from_dict({**local.model_dump(), "memory": "3M"}, where="t")
    assert memory.estimate(small, runtime) == memory.Need(3 * 1024**2, "ram")


def test_declared_memory_counts_against_max_memory(tmp_path: Path, tiny_sd: Path) -> None:
    """A model declaring more than --max-memory is refused before it loads; one whose declared
    size fits is admitted with that size even where the header estimate would not fit."""
    models = tmp_path / "models"
    models.mkdir()
    write_model(models, "big", tiny_sd, "memory: 100G\n")
    runtime = RuntimeSettings(device="cpu")
    local = config_from_dict({"name": "h", "parameters": {"model": str(tiny_sd)}}, where="h")
    header = memory.estimate(local, runtime)
    assert header is not None
    budget = Budget(ram=header.bytes // 2)
    engine = Engine(EngineSettings(models_path=models, runtime=runtime, memory_budget=budget))
    try:
        with pytest.raises(InsufficientMemory, match=r"'big' needs about 100\.0 GiB of RAM"):
            engine.generate("big", ImageRequest(prompt="a lighthouse", seed=1, steps=1))
        assert engine.slots["big"].state == "unloaded"
        small = FakeSlot(config_from_dict({**local.model_dump(), "memory": "1M"}, where="s"))
        engine.lifecycle.admit(small)
        assert small.memory_need == memory.Need(1024**2, "ram")
        with pytest.raises(InsufficientMemory, match="needs about"):
            engine.lifecycle.admit(FakeSlot(local))  # its header estimate is over the budget
    finally:
        engine.close()


class FakeSlot:
    """The little the lifecycle reads from a slot: admitting one loads nothing."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.last_used = 0.0
        self.memory_need: memory.Need | None = None
        self.state = "unloaded"
        self.busy = False
        self.memory_bytes: int | None = None

    def unload_if_idle(self) -> bool:
        return False
