"""Upscaler entries of the gallery: the shipped ones are listed with kind upscaler and a real
sha256, and an install from a fake host lands the file in upscale_models/, where the engine
finds it by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from localimg.cli import app
from localimg.errors import GalleryError
from localimg.gallery.catalog import Catalog, GallerySource, default_sources
from localimg.gallery.install import install
from tests.support.fake_hosts import FakeHosts, sha256
from tests.support.tiny_esrgan import tiny_esrgan

SHIPPED = {
    "realesrgan-x4plus": ("RealESRGAN_x4plus.pth", "4fa0d389"),
    "realesrgan-x4plus-anime-6b": ("RealESRGAN_x4plus_anime_6B.pth", "f872d837"),
    "realesrgan-x2plus": ("RealESRGAN_x2plus.pth", "49fafd45"),
    "4x-ultrasharp": ("4x-UltraSharp.pth", "a5812231"),
}


def test_the_shipped_catalog_lists_the_upscalers() -> None:
    catalog = Catalog.load(default_sources(builtin=True)[:1])
    entries = {e.name: e for e in catalog.image_entries()}
    for name, (filename, digest) in SHIPPED.items():
        entry = entries[name]
        assert entry.kind == "upscaler" and entry.summary()["kind"] == "upscaler"
        (item,) = entry.files
        assert item.filename == f"upscale_models/{filename}"
        assert len(item.sha256) == 64 and item.sha256.startswith(digest)
        assert filename in item.uri


def _index(folder: Path, hub: FakeHosts, name: str, filename: str) -> Path:
    weights = tiny_esrgan(4).read_bytes()
    hub.repos["test/tiny-esrgan"] = {"tiny.safetensors": weights}
    entry = {
        "name": name,
        "kind": "upscaler",
        "tags": ["upscaler"],
        "files": [
            {
                "filename": filename,
                "sha256": sha256(weights),
                "uri": "huggingface://test/tiny-esrgan/tiny.safetensors",
            }
        ],
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "index.yaml"
    path.write_text(yaml.safe_dump([entry], sort_keys=False), encoding="utf-8")
    return path


def test_install_lands_the_file_in_upscale_models(hub: FakeHosts, tmp_path: Path) -> None:
    index = _index(tmp_path / "i", hub, "up-tiny", "upscale_models/TinyUp.safetensors")
    models = tmp_path / "models"
    common = ["--models-path", str(models), "--gallery", str(index)]
    runner = CliRunner()
    out = runner.invoke(app, ["models", "install", "up-tiny", "--json", *common])
    assert out.exit_code == 0, out.output
    target = models / "upscale_models" / "TinyUp.safetensors"
    assert target.read_bytes() == tiny_esrgan(4).read_bytes()
    assert not (models / "up-tiny.yaml").exists()
    record = yaml.safe_load((models / "._gallery_up-tiny.yaml").read_text(encoding="utf-8"))
    assert record["kind"] == "upscaler"
    listed = json.loads(runner.invoke(app, ["models", "list", "--json", *common[:2]]).stdout)
    assert [(row["name"], row["kind"]) for row in listed] == [("TinyUp", "upscaler")]
    search = runner.invoke(app, ["gallery", "search", "up-tiny", "--json", *common])
    assert json.loads(search.stdout)[0]["installed"] is True
    out = runner.invoke(app, ["models", "remove", "up-tiny", "--json", *common[:2]])
    assert out.exit_code == 0, out.output
    assert not target.exists() and not (models / "._gallery_up-tiny.yaml").exists()


def test_a_file_outside_upscale_models_is_refused(hub: FakeHosts, tmp_path: Path) -> None:
    index = _index(tmp_path / "i", hub, "up-out", "controlnet/TinyUp.safetensors")
    catalog = Catalog.load([GallerySource("t", str(index))])
    with pytest.raises(GalleryError, match="must go in upscale_models/"):
        install(catalog.find("up-out"), tmp_path / "models")
