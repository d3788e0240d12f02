"""Installing from a test index served offline: files, hashes, records, CLI, `run`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from localimg.cli import app
from localimg.config import load_config_file
from localimg.errors import DownloadError, GalleryError
from localimg.gallery.catalog import Catalog, GallerySource
from localimg.gallery.install import InstallJob, InstallResult, install, read_record, remove
from tests.support.fake_hosts import FakeHosts, sha256
from tests.support.gallery_index import tiny_hub_entry

GGUF = b"GGUF" + bytes(range(256)) * 64
VAE = b"vae-weights" * 1000


def _write_index(folder: Path, entries: list[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ggml.yaml").write_text(
        "name: ggml\nconfig_file: |\n  backend: stablediffusion-ggml\n  step: 20\n"
        "  options:\n  - diffusion_model\n  - vae_path:ae.safetensors\n  - sampler:euler\n"
    )
    path = folder / "index.yaml"
    path.write_text(yaml.safe_dump(entries, sort_keys=False))
    return path


@pytest.fixture
def index(hub: FakeHosts, tmp_path: Path, tiny_sd: Path) -> Path:
    hub.files["model.gguf"] = GGUF
    hub.files["ae.safetensors"] = VAE
    hub.add_repo_folder("test/tiny-sd", tiny_sd)
    ggml_files = [
        {"filename": "model.gguf", "sha256": sha256(GGUF), "uri": f"{hub.url}/files/model.gguf"},
        {
            "filename": "ae.safetensors",
            "sha256": sha256(VAE),
            "uri": f"{hub.url}/files/ae.safetensors",
        },
    ]
    entries: list[dict[str, Any]] = [
        {
            "name": "flat-ggml",
            "tags": ["text-to-image"],
            "url": "ggml.yaml",
            "overrides": {"parameters": {"model": "model.gguf"}, "options": ["sampler:euler_a"]},
            "files": ggml_files,
        },
        {
            "name": "other-ggml",
            "tags": ["text-to-image"],
            "url": "ggml.yaml",
            "overrides": {"parameters": {"model": "model.gguf"}},
            "files": ggml_files,
        },
        {
            "name": "bad-hash",
            "tags": ["text-to-image"],
            "url": "ggml.yaml",
            "overrides": {"parameters": {"model": "model.gguf"}},
            "files": [{**ggml_files[0], "sha256": "f" * 64}],
        },
        {
            "name": "escape",
            "tags": ["text-to-image"],
            "url": "ggml.yaml",
            "files": [{**ggml_files[0], "filename": "../../outside.gguf"}],
        },
        {
            "name": "hub-snapshot",
            "tags": ["text-to-image"],
            "config_file": "backend: diffusers\n",
            "overrides": {"parameters": {"model": "test/tiny-sd"}},
        },
        tiny_hub_entry(tiny_sd),
    ]
    return _write_index(tmp_path / "index", entries)


def _catalog(index: Path) -> Catalog:
    return Catalog.load([GallerySource("test", str(index))])


def test_install_writes_yaml_record_and_verified_files(
    index: Path, hub: FakeHosts, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    result = install(_catalog(index).find("flat-ggml"), models)
    assert (models / "model.gguf").read_bytes() == GGUF
    assert (models / "ae.safetensors").read_bytes() == VAE
    config = load_config_file(result.yaml_path, models)
    assert config.backend == "stablediffusion-ggml" and config.model == "model.gguf"
    assert config.options == ["diffusion_model", "vae_path:ae.safetensors", "sampler:euler_a"]
    record = read_record(models, "flat-ggml")
    assert record is not None and record["gallery"] == "test"
    assert [f["filename"] for f in record["files"]] == ["model.gguf", "ae.safetensors"]

    # Installing again is a no-op that verifies: no new download, corrupted files fetched anew.
    gets = len([r for r in hub.log if r.method == "GET"])
    again = install(_catalog(index).find("flat-ggml"), models)
    assert again.already_installed
    assert len([r for r in hub.log if r.method == "GET"]) == gets
    (models / "model.gguf").write_bytes(b"broken")
    install(_catalog(index).find("flat-ggml"), models)
    assert (models / "model.gguf").read_bytes() == GGUF


def test_mismatch_refused_with_nothing_left(index: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    with pytest.raises(DownloadError, match=r"checksum mismatch for model\.gguf"):
        install(_catalog(index).find("bad-hash"), models)
    assert sorted(p.name for p in models.iterdir()) == []


def test_path_traversal_refused_before_any_download(
    index: Path, hub: FakeHosts, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    before = len(hub.log)
    with pytest.raises(GalleryError, match=r"unsafe file name '\.\./\.\./outside\.gguf'"):
        install(_catalog(index).find("escape"), models)
    assert len(hub.log) == before
    assert not (tmp_path / "outside.gguf").exists()


def test_remove_purges_only_unshared_files(index: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    install(_catalog(index).find("flat-ggml"), models)
    install(_catalog(index).find("other-ggml"), models)
    result = remove("flat-ggml", models, purge_files=True)
    assert not (models / "flat-ggml.yaml").exists()
    assert result.removed == [] and len(result.kept_shared) == 2
    result = remove("other-ggml", models, purge_files=True)
    assert sorted(p.name for p in result.removed) == ["ae.safetensors", "model.gguf"]
    assert sorted(p.name for p in models.iterdir()) == []


def test_hub_repo_prefetched_into_the_hub_cache(
    index: Path, hub: FakeHosts, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    result = install(_catalog(index).find("hub-snapshot"), models)
    assert result.hub_repo == "test/tiny-sd"
    cache = tmp_path / "hf-cache" / "models--test--tiny-sd"
    assert (cache / "snapshots").is_dir()
    fetched = {
        p.relative_to(next((cache / "snapshots").iterdir())).as_posix()
        for p in (cache / "snapshots").rglob("*")
        if p.is_file()
    }
    assert "model_index.json" in fetched and "unet/diffusion_pytorch_model.safetensors" in fetched
    assert load_config_file(result.yaml_path, models).model == "test/tiny-sd"


def test_cli_install_show_list_remove(index: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    runner = CliRunner()
    common = ["--models-path", str(models), "--gallery", str(index)]
    out = runner.invoke(app, ["models", "install", "flat-ggml", "--json", *common])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)[0]["name"] == "flat-ggml"
    out = runner.invoke(app, ["models", "show", "flat-ggml", "--json", *common])
    shown = json.loads(out.stdout)
    assert shown["installed"] and {f["state"] for f in shown["files"]} == {"present"}
    out = runner.invoke(app, ["gallery", "search", "ggml", "--json", *common])
    found = {e["name"]: e["installed"] for e in json.loads(out.stdout)}
    assert found["flat-ggml"] is True and found["other-ggml"] is False
    out = runner.invoke(app, ["models", "install", "flat-gml", *common])
    assert out.exit_code == 3 and "Did you mean flat-ggml" in out.output
    out = runner.invoke(
        app, ["models", "remove", "flat-ggml", "--purge-files", "--json", *common[:2]]
    )
    assert out.exit_code == 0, out.output
    assert len(json.loads(out.stdout)["removed_files"]) == 2


def test_run_with_prompt_installs_and_generates(index: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    output = tmp_path / "out.png"
    result = CliRunner().invoke(
        app,
        [
            "run",
            "tiny-hub",
            "--prompt",
            "a red square",
            "-o",
            str(output),
            "--size",
            "64x64",
            "--seed",
            "3",
            "--models-path",
            str(models),
            "--gallery",
            str(index),
        ],
    )
    assert result.exit_code == 0, result.output
    from PIL import Image

    with Image.open(output) as image:
        assert image.size == (64, 64)
    assert (models / "tiny-hub" / "model_index.json").is_file()
    assert load_config_file(models / "tiny-hub.yaml", models).model == "tiny-hub"


def test_run_with_a_local_folder_needs_no_gallery_entry(tiny_sd: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.png"
    result = CliRunner().invoke(
        app,
        ["run", str(tiny_sd), "--prompt", "x", "-o", str(output), "--steps", "2",
         "--models-path", str(tmp_path / "models")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert output.stat().st_size > 0
    result = CliRunner().invoke(
        app, ["run", "no-such-model", "--prompt", "x", "--models-path", str(tmp_path / "m")]
    )
    assert result.exit_code == 3 and "no model 'no-such-model' in the gallery" in result.output


def test_snapshot_keeps_the_tokenizers_chat_template() -> None:
    """Qwen3 / Mistral text encoders format prompts with it; without it Z-Image cannot run."""
    from localimg.gallery.install import select_pipeline_files

    names = [
        "model_index.json",
        "tokenizer/tokenizer.json",
        "tokenizer/chat_template.jinja",
        "transformer/diffusion_pytorch_model.safetensors",
        "assets/showcase.png",
    ]
    chosen = select_pipeline_files(names, None)
    assert "tokenizer/chat_template.jinja" in chosen and "assets/showcase.png" not in chosen


def test_offline_install_of_an_uncached_hub_model_warns_the_weights_are_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`models install sd-turbo` with HF_HUB_OFFLINE=1 and an empty cache: the YAML is installed
    (useful offline), but the output never claims the weights are there: one warning line says
    nothing was downloaded and that offline mode prevents the first use's download. Cached, the
    same install says nothing of the kind."""
    import json as json_module

    from localimg.gallery.catalog import GALLERIES_ENV
    from tests.support.hf_cache import snapshot, use_cache

    cache = use_cache(monkeypatch, tmp_path, offline=True)
    monkeypatch.delenv(GALLERIES_ENV, raising=False)  # the shipped gallery only
    models = tmp_path / "models"
    command = ["models", "install", "sd-turbo", "--models-path", str(models)]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    assert result.exception is None and "Traceback" not in result.output
    yaml_path = models / "sd-turbo.yaml"
    assert result.stdout == f"sd-turbo: YAML installed, weights not downloaded ({yaml_path})\n"
    (warning,) = result.stderr.splitlines()
    assert warning.startswith(
        "warning: stabilityai/sd-turbo is not in the local Hugging Face cache"
    )
    assert "offline mode is on (HF_HUB_OFFLINE=1): no weights were downloaded" in warning
    assert "first use" in warning
    assert load_config_file(yaml_path, models).model == "stabilityai/sd-turbo"

    again = CliRunner().invoke(app, [*command, "--json"])
    assert again.exit_code == 0, again.output
    (shown,) = json_module.loads(again.stdout)
    assert shown["warnings"] == [warning.removeprefix("warning: ")]
    job = InstallJob(id="j", model="sd-turbo", status="done")  # the server's /models/apply
    job.result = InstallResult("sd-turbo", yaml_path, [], "stabilityai/sd-turbo", True)
    job.result.warnings = shown["warnings"]
    assert job.to_localai()["message"] == f"completed; {warning}"

    files = snapshot(cache, "stabilityai/sd-turbo")  # now the weights are in the cache
    (files / "model_index.json").write_text('{"unet": ["diffusers", "UNet2DConditionModel"]}')
    (files / "unet").mkdir()
    (files / "unet" / "config.json").write_text("{}")
    (files / "unet" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"weights")
    cached = CliRunner().invoke(app, command)
    assert cached.exit_code == 0, cached.output
    assert cached.stdout.startswith("sd-turbo: already installed") and not cached.stderr
