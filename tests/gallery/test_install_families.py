"""The install refuses a stablediffusion-ggml entry whose `family:` the bundled stable-diffusion.cpp
cannot load, before any byte is fetched, naming the diffusers entry that runs the family; the
families it loads install as before. Offline: files come from the fake host."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from localimg.errors import GalleryError
from localimg.gallery.catalog import Catalog, GallerySource
from localimg.gallery.install import install
from tests.support.fake_hosts import FakeHosts, sha256

WEIGHTS = b"GGUF" + bytes(range(256)) * 16

# slug → what the refusal names (the diffusers gallery entry, or the pipeline class)
UNLOADABLE = {
    "krea-2": "install the gallery entry 'krea-2'",
    "ideogram-4": "install the gallery entry 'ideogram-4'",
    "qwen-image-layered": "install the gallery entry 'qwen-image-layered'",
    "qwen-image-2": "install the gallery entry 'qwen-image-2'",
    "z-image-omni": "pipeline_type: ZImageOmniPipeline",
    "ltx-2": "install the gallery entry 'ltx-2'",
}
LOADABLE = ("ernie-image", "anima", "z-image", "qwen-image-2512")


def _entry(name: str, family: str, backend: str, url: str) -> dict[str, Any]:
    return {
        "name": name,
        "family": family,
        "tags": ["text-to-image"],
        "config_file": f"backend: {backend}\nparameters:\n  model: model.gguf\n",
        "files": [{"filename": "model.gguf", "sha256": sha256(WEIGHTS), "uri": url}],
    }


@pytest.fixture
def catalog(hub: FakeHosts, tmp_path: Path) -> Catalog:
    hub.files["model.gguf"] = WEIGHTS
    url = f"{hub.url}/files/model.gguf"
    entries = [_entry(f"{slug}-ggml", slug, "stablediffusion-ggml", url) for slug in UNLOADABLE]
    entries += [_entry(f"{slug}-ggml", slug, "stablediffusion-ggml", url) for slug in LOADABLE]
    entries.append(_entry("krea-2-alias", "krea-2", "sd.cpp", url))  # a backend alias
    entries.append(_entry("krea-2-diffusers", "krea-2", "diffusers", url))
    index = tmp_path / "index" / "index.yaml"
    index.parent.mkdir(parents=True)
    index.write_text(yaml.safe_dump(entries, sort_keys=False), encoding="utf-8")
    return Catalog.load([GallerySource("test", str(index))])


@pytest.mark.parametrize("slug", sorted(UNLOADABLE))
def test_a_ggml_entry_of_an_unloadable_family_is_refused_before_any_download(
    slug: str, catalog: Catalog, hub: FakeHosts, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    before = len(hub.log)
    with pytest.raises(GalleryError) as caught:
        install(catalog.find(f"{slug}-ggml"), models)
    message = caught.value.message
    assert f"family ({slug})" in message and "cannot load" in message
    assert UNLOADABLE[slug] in message and "diffusers backend" in message
    assert len(hub.log) == before  # nothing fetched
    assert not models.exists() or not any(models.iterdir())


def test_a_backend_alias_is_refused_too_and_the_diffusers_entry_is_not(
    catalog: Catalog, tmp_path: Path
) -> None:
    with pytest.raises(GalleryError, match=r"Krea 2 family \(krea-2\)"):
        install(catalog.find("krea-2-alias"), tmp_path / "models")
    result = install(catalog.find("krea-2-diffusers"), tmp_path / "models", prefetch=False)
    assert result.yaml_path.is_file()


@pytest.mark.parametrize("slug", LOADABLE)
def test_a_ggml_entry_of_a_family_it_loads_installs(
    slug: str, catalog: Catalog, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    result = install(catalog.find(f"{slug}-ggml"), models)
    assert result.yaml_path.is_file() and (models / "model.gguf").read_bytes() == WEIGHTS
