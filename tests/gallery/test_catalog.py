"""gallery.py: index formats, template resolution, merging, and the shipped gallery's checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from localimg.download import GITHUB_RAW_ENV
from localimg.errors import GalleryError, ModelNotFound
from localimg.gallery import build as gallery_build
from localimg.gallery import catalog as gallery
from localimg.gallery.catalog import (
    Catalog,
    GallerySource,
    merge_config,
    merge_options,
    resolve_entry,
)
from tests.support.fake_hosts import FakeHosts

# LocalAI's gallery/flux-ggml.yaml and its flux.1-dev-ggml entry, in their published shape.
LOCALAI_FLUX_TEMPLATE = """\
---
name: "flux-ggml"

config_file: |
    backend: stablediffusion-ggml
    step: 25
    options:
    - "diffusion_model"
    - "clip_l_path:clip_l.safetensors"
    - "t5xxl_path:t5xxl_fp16.safetensors"
    - "vae_path:ae.safetensors"
    - "sampler:euler"

    cfg_scale: 1
"""
LOCALAI_INDEX = """\
---
- &llama
  name: some-llm
  url: github:mudler/LocalAI/gallery/llama3-instruct.yaml@master
  tags: [llm, gguf]
  overrides:
    parameters:
      model: llm.gguf
- !!merge <<: *llama
  name: some-llm-2
- name: flux.1-dev-ggml
  url: github:mudler/LocalAI/gallery/flux-ggml.yaml@master
  license: flux-1-dev-non-commercial-license
  tags: [flux, text-to-image, gguf]
  last_checked: "2026-05-04"
  overrides:
    options:
      - scheduler:simple
      - keep_clip_on_cpu:true
    parameters:
      model: flux1-dev-Q2_K.gguf
  files:
    - filename: flux1-dev-Q2_K.gguf
      sha256: b8c464bc0f10076ef8f00ba040d220d90c7993f7c4245ae80227d857f65df105
      uri: huggingface://city96/FLUX.1-dev-gguf/flux1-dev-Q2_K.gguf
    - filename: ae.safetensors
      sha256: afc8e28272cd15db3919bacdb6918ce9c1ed22e96cb12c4d5ed0fba823529e38
      uri: https://huggingface.co/ChuckMcSneed/FLUX.1-dev/resolve/main/ae.safetensors
"""
FULL_FLUX_OPTIONS = [
    "diffusion_model",
    "clip_l_path:clip_l.safetensors",
    "t5xxl_path:t5xxl_fp16.safetensors",
    "vae_path:ae.safetensors",
    "sampler:euler",
    "scheduler:simple",
    "keep_clip_on_cpu:true",
]


def test_options_merge_by_key() -> None:
    merged = merge_options(
        ["sampler:euler", "clip_l_path:a", "diffusion_model"], ["sampler:euler_a", "flow_shift:3"]
    )
    assert merged == ["sampler:euler_a", "clip_l_path:a", "diffusion_model", "flow_shift:3"]


def test_maps_merge_deeply_and_other_lists_are_replaced() -> None:
    base = {"step": 25, "diffusers": {"pipeline_type": "A", "cuda": True}, "lora_adapters": ["x"]}
    over = {"diffusers": {"pipeline_type": "B"}, "lora_adapters": ["y"], "cfg_scale": 2}
    assert merge_config(base, over) == {
        "step": 25,
        "diffusers": {"pipeline_type": "B", "cuda": True},
        "lora_adapters": ["y"],
        "cfg_scale": 2,
    }
    assert base["diffusers"] == {"pipeline_type": "A", "cuda": True}  # inputs untouched


def test_localai_index_and_flux_entry(hosts: FakeHosts, monkeypatch: pytest.MonkeyPatch) -> None:
    hosts.pages["/mudler/LocalAI/master/gallery/index.yaml"] = LOCALAI_INDEX.encode()
    hosts.pages["/mudler/LocalAI/master/gallery/flux-ggml.yaml"] = LOCALAI_FLUX_TEMPLATE.encode()
    monkeypatch.setenv(GITHUB_RAW_ENV, hosts.url)
    monkeypatch.setenv(gallery.GALLERIES_ENV, "localai")
    sources = gallery.default_sources(builtin=False)
    assert sources == [GallerySource("localai", gallery.LOCALAI_INDEX)]
    catalog = Catalog.load(sources)
    assert [e.name for e in catalog.entries] == ["some-llm", "some-llm-2", "flux.1-dev-ggml"]
    assert [e.name for e in catalog.image_entries()] == ["flux.1-dev-ggml"]
    entry = catalog.find("localai@flux.1-dev-ggml")
    resolved = resolve_entry(entry)
    # LocalAI would keep only the two override options; merged by key, nothing is lost.
    assert resolved.config["options"] == FULL_FLUX_OPTIONS
    assert resolved.config["backend"] == "stablediffusion-ggml"
    assert resolved.config["cfg_scale"] == 1 and resolved.config["step"] == 25
    assert resolved.config["name"] == "flux.1-dev-ggml"
    assert [f.filename for f in resolved.files] == ["flux1-dev-Q2_K.gguf", "ae.safetensors"]
    gallery.check_resolved(resolved)
    with pytest.raises(GalleryError, match="not an image backend"):
        gallery.check_resolved(
            resolve_entry(gallery.GalleryEntry(name="x", overrides={"backend": "llama-cpp"}))
        )


def test_unknown_name_suggests_closest() -> None:
    catalog = Catalog.load(gallery.default_sources(builtin=True))
    with pytest.raises(ModelNotFound, match=r"Did you mean [^?]*flux\.1-dev-ggml"):
        catalog.find("flux-dev-ggml")


def test_galleries_env_forms() -> None:
    assert gallery.parse_galleries('[{"name": "a", "url": "https://x/index.yaml"}]') == [
        GallerySource("a", "https://x/index.yaml")
    ]
    assert gallery.parse_galleries("mine=/srv/g.yaml, localai") == [
        GallerySource("mine", "/srv/g.yaml"),
        GallerySource("localai", gallery.LOCALAI_INDEX),
    ]
    with pytest.raises(GalleryError, match="LOCALIMG_GALLERIES is not valid"):
        gallery.parse_galleries("[{]")


def test_shipped_gallery_passes_its_checks_and_index_is_fresh() -> None:
    assert gallery_build.check() == []


def test_shipped_entries_resolve_with_full_flux_options() -> None:
    catalog = Catalog.load(gallery.default_sources(builtin=True))
    names = {e.name for e in catalog.entries}
    assert {
        "flux.1-dev-ggml",
        "flux.1-schnell-ggml",
        "sd-1.5-ggml",
        "sd-3.5-medium-ggml",
        "sd-3.5-large-ggml",
        "sd-turbo",
        "stable-diffusion-xl-base-1.0",
        "dreamshaper",
        "animagine-xl",
        "stablediffusion-edit",
        "stablediffusion-depth",
        "img2vid",
        "txt2vid",
    } <= names
    flux = resolve_entry(catalog.find("flux.1-dev-ggml"))
    assert flux.config["options"] == FULL_FLUX_OPTIONS
    medium = resolve_entry(catalog.find("sd-3.5-medium-ggml"))
    assert medium.config["options"] == [
        "clip_l_path:clip_l-Q4_0.gguf",
        "clip_g_path:clip_g-Q4_0.gguf",
        "t5xxl_path:t5xxl-Q4_0.gguf",
        "sampler:euler",
    ]


def test_gallery_check_reports_problems(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "models").mkdir()
    (tmp_path / "templates" / "t.yaml").write_text(LOCALAI_FLUX_TEMPLATE)
    (tmp_path / "models" / "bad.yaml").write_text(
        "name: bad\ndescription: d\nlicense: l\nurls: [u]\ntags: [text-to-image]\n"
        "template: t.yaml\nfiles:\n- filename: ../x.gguf\n  uri: https://x/y\n"
    )
    problems = gallery_build.check(tmp_path)
    text = "\n".join(problems)
    assert "no sha256 and no sha256_reason" in text
    assert "unsafe file name" in text
    assert "names a file the entry does not ship" in text
    assert "stale or missing" in text
    assert "overrides.memory is missing" in text  # the template is a ggml one


def test_gallery_build_usage_names_a_module_that_runs_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The usage line's `python -m MODULE` must be importable and be this very module (it once
    named localimg.gallery_build, which does not exist)."""
    import importlib
    import re

    assert gallery_build.main(["--help"]) == 0
    shown = capsys.readouterr().out
    assert gallery_build.main(["no-such-command"]) == 2
    assert capsys.readouterr().err == shown
    named = re.findall(r"python -m (\S+) build\|check", shown)
    assert named == ["localimg.gallery.build"]
    assert importlib.import_module(named[0]) is gallery_build
    docstring = re.findall(r"python -m (\S+) (?:build|check)", gallery_build.__doc__ or "")
    assert set(docstring) == {"localimg.gallery.build"}


def test_shipped_entries_pass_their_backends_checks() -> None:
    """Each shipped YAML as the backend would read it: pipeline, scheduler, ggml options."""
    from localimg.backends.diffusers import options as diffusers_options
    from localimg.backends.diffusers.load.loading import pipeline_class
    from localimg.backends.diffusers.sampling import schedulers
    from localimg.config import config_from_dict

    catalog = Catalog.load(gallery.default_sources(builtin=True))
    import importlib
    import importlib.util

    # The ggml option checks run where that backend's module is present.
    has_ggml = importlib.util.find_spec("stable_diffusion_cpp") is not None
    ggml = importlib.import_module("localimg.backends.ggml.options") if has_ggml else None
    for entry in catalog.entries:
        config = config_from_dict(dict(resolve_entry(entry).config), where=entry.name)
        if config.backend == "diffusers":
            if config.diffusers.pipeline_type:
                pipeline_class(config.diffusers.pipeline_type)
            if config.diffusers.scheduler_type:
                schedulers.lookup(config.diffusers.scheduler_type, param="scheduler_type")
            diffusers_options.parse_options(config)
        elif ggml is not None:
            ggml.parse_options(config)


def test_localai_flux_entry_installs_with_full_options(
    hosts: FakeHosts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LocalAI's index format end to end: github: template, huggingface:// and https files."""
    from huggingface_hub import constants

    from localimg.config import load_config_file
    from localimg.gallery.install import install
    from tests.support.fake_hosts import sha256

    weights = {"flux1-dev-Q2_K.gguf": b"gguf" * 100, "ae.safetensors": b"vae" * 100}
    hosts.repos["city96/FLUX.1-dev-gguf"] = {"flux1-dev-Q2_K.gguf": weights["flux1-dev-Q2_K.gguf"]}
    hosts.files["ae.safetensors"] = weights["ae.safetensors"]
    index = LOCALAI_INDEX.replace(
        "https://huggingface.co/ChuckMcSneed/FLUX.1-dev/resolve/main/ae.safetensors",
        f"{hosts.url}/files/ae.safetensors",
    )
    for name, data in weights.items():
        real = "b8c464bc" if name.endswith("gguf") else "afc8e282"
        start = index.index(real)
        index = index[:start] + sha256(data) + index[start + 64 :]
    hosts.pages["/mudler/LocalAI/master/gallery/index.yaml"] = index.encode()
    hosts.pages["/mudler/LocalAI/master/gallery/flux-ggml.yaml"] = LOCALAI_FLUX_TEMPLATE.encode()
    monkeypatch.setenv(GITHUB_RAW_ENV, hosts.url)
    monkeypatch.setenv("HF_ENDPOINT", hosts.url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))

    catalog = Catalog.load([GallerySource("localai", gallery.LOCALAI_INDEX)])
    models = tmp_path / "models"
    # This excerpt ships two of the four files; the text encoders are already in the models dir.
    models.mkdir()
    (models / "clip_l.safetensors").write_bytes(b"clip")
    (models / "t5xxl_fp16.safetensors").write_bytes(b"t5")
    result = install(catalog.find("flux.1-dev-ggml"), models)
    config = load_config_file(result.yaml_path, models)
    assert config.options == FULL_FLUX_OPTIONS
    assert result.notes == []
    assert config.model == "flux1-dev-Q2_K.gguf"
    for name, data in weights.items():
        assert (models / name).read_bytes() == data

    # Without them, the options naming files that will never arrive are dropped, with a note.
    (models / "t5xxl_fp16.safetensors").unlink()
    again = install(catalog.find("flux.1-dev-ggml"), models, name="flux-no-t5")
    assert load_config_file(again.yaml_path, models).options == [
        o for o in FULL_FLUX_OPTIONS if not o.startswith("t5xxl_path")
    ]
    assert again.notes == [
        "dropped option 't5xxl_path:t5xxl_fp16.safetensors': the entry ships no file "
        "'t5xxl_fp16.safetensors'"
    ]


def test_a_users_own_index_lists_its_entries_without_tags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, an entry with no tags installed but `gallery list`/`search` hid it."""
    import json

    from typer.testing import CliRunner

    from localimg.cli import app

    index = tmp_path / "mine.yaml"
    index.write_text(
        "- name: my-otter-model\n  description: my own fine-tune\n"
        "  overrides:\n    parameters:\n      model: owner/otter\n"
        "- name: my-chat-model\n  tags: [llm]\n  overrides:\n    backend: llama-cpp\n",
        encoding="utf-8",
    )
    monkeypatch.delenv("LOCALIMG_GALLERIES", raising=False)
    models = tmp_path / "models"
    listed = CliRunner().invoke(
        app, ["gallery", "list", "--gallery", str(index), "--json", "--models-path", str(models)]
    )
    assert listed.exit_code == 0, listed.output
    names = [e["name"] for e in json.loads(listed.output)]
    assert "my-otter-model" in names
    assert "my-chat-model" not in names  # clearly another kind of model
    found = CliRunner().invoke(
        app, ["gallery", "search", "otter", "--gallery", str(index), "--json"]
    )
    assert found.exit_code == 0, found.output
    assert [e["name"] for e in json.loads(found.output)] == ["my-otter-model"]


@pytest.mark.parametrize(
    "backend",
    ["diffusers", "stablediffusion-ggml", "sd.cpp", "GGML", "stablediffusion", "llama-cpp"],
)
def test_gallery_lists_exactly_the_backends_install_accepts(backend: str) -> None:
    """`gallery list` once showed `backend: stablediffusion` entries (LocalAI's retired ncnn
    backend) that install then refused: both now read config/backend_names.py."""
    from localimg.backends import canonical_name
    from localimg.errors import ConfigError
    from localimg.gallery.catalog import is_image_entry, is_other_kind

    entry = gallery.GalleryEntry(
        name="x", tags=["stable-diffusion"], overrides={"backend": backend}
    )
    try:
        canonical_name(backend)
        installable = True
    except ConfigError:
        installable = False
    assert is_image_entry(entry) == installable
    assert is_other_kind(entry) == (not installable)
