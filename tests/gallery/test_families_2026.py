"""The gallery entries of the 2026 families: Krea 2, Ideogram 4, ERNIE-Image, Qwen-Image-2512,
Qwen-Image-Layered, Qwen-Image 2.x, Z-Image, Anima and LTX-2.

Offline: nothing here downloads. Each entry is resolved from the shipped index the way `models
install` resolves it and checked against what the backends accept, the model cards' defaults and
the `family` slug the install reads to refuse an engine that cannot load the family.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from localimg._util.units import parse_bytes
from localimg.config import HUB_ID, ModelConfig, config_from_dict, load_config_file
from localimg.config.options import OPTION_ALIASES
from localimg.download import parse_uri
from localimg.gallery import build as gallery_build
from localimg.gallery import catalog as gallery
from localimg.gallery.catalog import Catalog, GalleryEntry, resolve_entry

DIFFUSERS = "diffusers"
GGML = "stablediffusion-ggml"

# name → (backend, diffusers class or None, declared memory, family slug)
ENTRIES: dict[str, tuple[str, str | None, str, str]] = {
    "krea-2": (DIFFUSERS, "Krea2Pipeline", "38G", "krea-2"),
    "ideogram-4": (DIFFUSERS, "Ideogram4Pipeline", "56G", "ideogram-4"),
    "ernie-image": (DIFFUSERS, "ErnieImagePipeline", "33G", "ernie-image"),
    "ernie-image-turbo": (DIFFUSERS, "ErnieImagePipeline", "33G", "ernie-image"),
    "ernie-image-ggml": (GGML, None, "9G", "ernie-image"),
    "ernie-image-turbo-ggml": (GGML, None, "9G", "ernie-image"),
    "qwen-image-2512": (DIFFUSERS, "QwenImagePipeline", "60G", "qwen-image-2512"),
    "qwen-image-2512-ggml": (GGML, None, "20G", "qwen-image-2512"),
    "qwen-image-layered": (DIFFUSERS, "QwenImageLayeredPipeline", "60G", "qwen-image-layered"),
    "qwen-image-2": (DIFFUSERS, "QwenImage21Pipeline", "34G", "qwen-image-2"),
    "z-image": (DIFFUSERS, "ZImagePipeline", "22G", "z-image"),
    "z-image-ggml": (GGML, None, "9G", "z-image"),
    "anima": (DIFFUSERS, "AnimaModularPipeline", "7G", "anima"),
    "anima-ggml": (GGML, None, "7G", "anima"),
    "ltx-2": (DIFFUSERS, "LTX2Pipeline", "68G", "ltx-2"),
}
# The families the bundled stable-diffusion.cpp (binding 0.4.7) loads; only these have -ggml
# entries, and every other family is diffusers only.
GGML_FAMILIES = frozenset({"ernie-image", "z-image", "qwen-image-2512", "anima"})
# The LLM text encoder each -ggml entry names: the family's encoder, not any file.
LLM_FILES = {
    "ernie-image-ggml": "Ministral-3-3B-Instruct-2512-Q4_K_M.gguf",
    "ernie-image-turbo-ggml": "Ministral-3-3B-Instruct-2512-Q4_K_M.gguf",
    "qwen-image-2512-ggml": "Qwen2.5-VL-7B-Instruct-Q4_K_M.gguf",
    "z-image-ggml": "Qwen3-4B.Q4_K_M.gguf",
    "anima-ggml": "qwen_3_06b_base.safetensors",
}


@pytest.fixture(scope="module")
def shipped() -> Catalog:
    return Catalog.load(gallery.default_sources(builtin=True))


def _config(entry: GalleryEntry) -> ModelConfig:
    return config_from_dict(dict(resolve_entry(entry).config), where=entry.name)


def _option_keys(backend: str) -> frozenset[str]:
    """The options the backend consumes; skipped where that backend cannot be imported."""
    if backend == GGML:
        pytest.importorskip("stable_diffusion_cpp")
        from localimg.backends.ggml.options import OPTION_KEYS as ggml_keys

        return ggml_keys
    from localimg.backends.diffusers.options import OPTION_KEYS as diffusers_keys

    return diffusers_keys


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_entry_is_in_the_built_index_with_its_family(name: str, shipped: Catalog) -> None:
    index = {item["name"]: item for item in yaml.safe_load(gallery_build.build_index())}
    assert index[name]["family"] == ENTRIES[name][3]
    entry = shipped.find(name)
    assert entry.license and entry.urls and entry.description
    assert gallery.is_image_entry(entry)
    assert (entry.model_extra or {})["family"] == ENTRIES[name][3]


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_entry_loads_as_a_model_config_the_backend_accepts(
    name: str, shipped: Catalog, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    backend, pipeline, declared, _ = ENTRIES[name]
    resolved = resolve_entry(shipped.find(name))
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
    if backend == DIFFUSERS:
        import diffusers

        from localimg.backends.diffusers import options as diffusers_options

        assert config.diffusers.pipeline_type == pipeline
        assert isinstance(getattr(diffusers, str(pipeline), None), type)  # a real 0.42 class
        assert diffusers_options.parse_options(config).dtype == "bfloat16"
        assert config.model and HUB_ID.match(config.model)
    else:
        from localimg.backends.ggml import options as ggml_options

        parsed = ggml_options.parse_options(config)
        assert parsed.diffusion_model and parsed.vae_path
        assert parsed.offload_params_to_cpu or parsed.keep_clip_on_cpu  # low-VRAM defaults


@pytest.mark.parametrize("name", sorted(n for n in ENTRIES if n.endswith("-ggml")))
def test_ggml_entry_ships_every_file_it_names_from_the_hub(name: str, shipped: Catalog) -> None:
    resolved = resolve_entry(shipped.find(name))
    shipped_files = {f.filename: f for f in resolved.files}
    named = [str(resolved.config["parameters"]["model"])]
    options = dict(str(o).partition(":")[::2] for o in resolved.config.get("options") or [])
    named += [value for key, value in options.items() if key.endswith("_path")]
    assert set(named) == set(shipped_files), "every file is named by an option and vice versa"
    for item in resolved.files:
        source = parse_uri(item.uri)
        assert source.kind == "hub", item.uri  # so a file without sha256 is checked by its etag
        assert source.path_in_repo.rsplit("/", 1)[-1] == item.filename
        assert item.sha256 or item.sha256_reason
    assert options["llm_path"] == LLM_FILES[name]


def test_a_file_two_entries_share_is_the_same_file(shipped: Catalog) -> None:
    """Entries that name one file name (the FLUX.2 VAE, the Qwen-Image VAE, Qwen3-4B) check it
    against one checksum, so installing the second entry never clashes with the first."""
    seen: dict[str, str] = {}
    for entry in shipped.image_entries():
        for item in resolve_entry(entry).files:
            if item.sha256:
                assert seen.setdefault(item.filename, item.sha256) == item.sha256, (
                    entry.name,
                    item.filename,
                )


def test_only_the_families_the_bundled_engine_loads_have_ggml_entries() -> None:
    for name, (backend, _, _, family) in ENTRIES.items():
        assert (backend == GGML) == name.endswith("-ggml")
        if backend == GGML:
            assert family in GGML_FAMILIES, name
    every_family = {family for *_, family in ENTRIES.values()}
    assert every_family == GGML_FAMILIES | {
        "krea-2",
        "ideogram-4",
        "qwen-image-layered",
        "qwen-image-2",
        "ltx-2",
    }


def test_model_card_defaults(shipped: Catalog) -> None:
    """Steps, guidance and size as the model cards and stable-diffusion.cpp's docs give them."""
    expect: dict[str, tuple[int, float | None, str | None]] = {
        "krea-2": (8, 0, "1024x1024"),
        "ideogram-4": (48, None, "1024x1024"),  # no cfg_scale: the pipeline's 7-then-3 schedule
        "ernie-image": (50, 4, "1024x1024"),
        "ernie-image-turbo": (8, 1, "1024x1024"),
        "ernie-image-ggml": (20, 5, "1024x1024"),
        "ernie-image-turbo-ggml": (8, 1, "1024x1024"),
        "qwen-image-2512": (50, 4, "1328x1328"),
        "qwen-image-2512-ggml": (20, 2.5, "1024x1024"),
        "qwen-image-layered": (50, 4, None),  # the pipeline's 640 resolution bucket
        "qwen-image-2": (40, 1, "1024x1024"),
        "z-image": (50, 4, "1024x1024"),
        "z-image-ggml": (20, 5, "1024x1024"),
        "anima": (30, 4, "1024x1024"),
        "anima-ggml": (20, 6, "1024x1024"),
        "ltx-2": (30, 3, "768x512"),
    }
    assert set(expect) == set(ENTRIES)
    for name, (steps, cfg, size) in expect.items():
        config = _config(shipped.find(name))
        assert (config.step, config.cfg_scale, config.size) == (steps, cfg, size), name


def test_ltx2_entry_asks_for_the_model_cards_clip() -> None:
    config = _config(Catalog.load(gallery.default_sources(builtin=True)).find("ltx-2"))
    options = config.parsed_options()
    assert options["num_frames"] == 121 and options["fps"] == 24
