"""ControlNet entries of the gallery: the shipped ones are listed with kind controlnet, and an
install from a fake hub lands the files in controlnet/ with a record and no model YAML."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from localimg.cli import app
from localimg.config import controlnet_items
from localimg.errors import DownloadError, GalleryError
from localimg.gallery.catalog import Catalog, GallerySource, default_sources
from localimg.gallery.install import install, remove
from tests.support.fake_hosts import FakeHosts, sha256

SHIPPED = {
    "controlnet-sd15-canny": "control_v11p_sd15_canny",
    "controlnet-sd15-depth": "control_v11f1p_sd15_depth",
    "controlnet-sd15-openpose": "control_v11p_sd15_openpose",
    "controlnet-union-sdxl": "xinsir/controlnet-union-sdxl-1.0",
    "controlnet-union-flux.1": "FLUX.1-dev-ControlNet-Union-Pro-2.0",
    "controlnet-union-z-image-turbo": "alibaba-pai/Z-Image-Turbo-Fun-Controlnet-Union",
    "controlnet-union-qwen-image": "InstantX/Qwen-Image-ControlNet-Union",
}
WEIGHTS = b"controlnet-weights" * 4096
CONFIG = b'{"_class_name": "ControlNetModel"}'


def test_the_shipped_catalog_lists_the_controlnets() -> None:
    catalog = Catalog.load(default_sources(builtin=True)[:1])
    entries = {e.name: e for e in catalog.image_entries()}
    for name, origin in SHIPPED.items():
        entry = entries[name]
        assert entry.kind == "controlnet" and entry.summary()["kind"] == "controlnet"
        assert any(origin in url for url in entry.urls), entry.urls
        assert entry.files and all(f.filename.startswith("controlnet/") for f in entry.files)
        for item in entry.files:  # a real sha256, or the written reason there is none
            assert len(item.sha256) == 64 or item.sha256_reason, item.filename
    assert entries["controlnet-union-sdxl"].files[1].sha256.startswith("9fae2e50")
    assert entries["sd-turbo"].kind == "model"


def _entry(hub: FakeHosts, name: str, **changes: Any) -> dict[str, Any]:
    hub.repos["test/tiny-cn"] = {
        "config.json": CONFIG,
        "diffusion_pytorch_model.safetensors": WEIGHTS,
    }
    files = [
        {
            "filename": f"controlnet/{name}/{path}",
            "sha256": sha256(data),
            "uri": f"huggingface://test/tiny-cn/{path}",
        }
        for path, data in hub.repos["test/tiny-cn"].items()
    ]
    entry = {"name": name, "kind": "controlnet", "tags": ["controlnet"], "files": files}
    return {**entry, **changes}


def _index(folder: Path, entries: list[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "index.yaml"
    path.write_text(yaml.safe_dump(entries, sort_keys=False), encoding="utf-8")
    return path


def test_install_lands_the_files_in_controlnet_and_writes_no_yaml(
    hub: FakeHosts, tmp_path: Path
) -> None:
    index = _index(tmp_path / "index", [_entry(hub, "cn-tiny")])
    models = tmp_path / "models"
    common = ["--models-path", str(models), "--gallery", str(index)]
    runner = CliRunner()
    out = runner.invoke(app, ["models", "install", "cn-tiny", "--json", *common])
    assert out.exit_code == 0, out.output
    folder = models / "controlnet" / "cn-tiny"
    assert (folder / "diffusion_pytorch_model.safetensors").read_bytes() == WEIGHTS
    assert (folder / "config.json").read_bytes() == CONFIG
    assert not (models / "cn-tiny.yaml").exists()
    record = yaml.safe_load((models / "._gallery_cn-tiny.yaml").read_text(encoding="utf-8"))
    assert record["kind"] == "controlnet" and len(record["files"]) == 2
    assert [item["name"] for item in controlnet_items(models)] == ["cn-tiny"]
    listed = json.loads(runner.invoke(app, ["models", "list", "--json", *common[:2]]).stdout)
    assert [(row["name"], row["kind"]) for row in listed] == [("cn-tiny", "controlnet")]
    search = runner.invoke(app, ["gallery", "search", "cn-tiny", "--json", *common])
    assert json.loads(search.stdout)[0]["installed"] is True
    again = runner.invoke(app, ["models", "install", "cn-tiny", "--json", *common])
    assert json.loads(again.stdout)[0]["already_installed"] is True
    out = runner.invoke(app, ["models", "remove", "cn-tiny", "--json", *common[:2]])
    assert out.exit_code == 0, out.output
    assert not folder.exists() and not (models / "._gallery_cn-tiny.yaml").exists()


def test_a_wrong_sha256_is_refused_and_nothing_is_kept(hub: FakeHosts, tmp_path: Path) -> None:
    entry = _entry(hub, "cn-bad")
    entry["files"][1]["sha256"] = "0" * 64
    catalog = Catalog.load([GallerySource("t", str(_index(tmp_path / "i", [entry])))])
    models = tmp_path / "models"
    with pytest.raises(DownloadError, match="sha256"):
        install(catalog.find("cn-bad"), models)
    assert not (models / "controlnet" / "cn-bad" / "diffusion_pytorch_model.safetensors").exists()
    assert not (models / "._gallery_cn-bad.yaml").exists()


def test_a_file_outside_controlnet_is_refused(hub: FakeHosts, tmp_path: Path) -> None:
    entry = _entry(hub, "cn-out")
    entry["files"][0]["filename"] = "loose.safetensors"
    catalog = Catalog.load([GallerySource("t", str(_index(tmp_path / "i", [entry])))])
    with pytest.raises(GalleryError, match="must go in controlnet/"):
        install(catalog.find("cn-out"), tmp_path / "models")
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_remove_keeps_a_file_another_entry_lists(hub: FakeHosts, tmp_path: Path) -> None:
    first, second = _entry(hub, "cn-a"), _entry(hub, "cn-b")
    second["files"] = first["files"]
    catalog = Catalog.load([GallerySource("t", str(_index(tmp_path / "i", [first, second])))])
    models = tmp_path / "models"
    install(catalog.find("cn-a"), models)
    install(catalog.find("cn-b"), models)
    result = remove("cn-b", models)
    assert result.removed == [] and len(result.kept_shared) == 2
    assert (models / "controlnet" / "cn-a" / "config.json").is_file()
