"""Shared fixtures: tiny random models built offline and cached, models dirs with YAML for them,
and (through pytest_plugins) the fake model hosts."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.support.tiny_families import TinyFamily

# Never reach a model hub from the tests; quiet the libraries' own chatter.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

# Fixtures defined next to what they serve, shared with every test module from here (a module
# that imported them by name would shadow them, and ruff would see an unused import).
pytest_plugins = ["tests.support.fake_hosts"]


@pytest.fixture(scope="session")
def tiny_sd() -> Path:
    """A tiny random StableDiffusionPipeline folder (64x64 default size), built once and cached."""
    from tests.support.tiny_models import tiny_sd_path

    return tiny_sd_path()


@pytest.fixture
def models_dir(tmp_path: Path, tiny_sd: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A models dir holding `tiny.yaml` (the tiny pipeline, 4 steps) and nothing else.

    LOCALIMG_MODELS_PATH points at it, and LOCALIMG_MODEL is unset, so commands that take no
    --models-path see exactly this directory.
    """
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "tiny.yaml").write_text(
        f"name: tiny\nbackend: diffusers\nparameters:\n  model: {tiny_sd}\nstep: 4\ncfg_scale: 7\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("LOCALIMG_MODELS_PATH", str(folder))
    monkeypatch.delenv("LOCALIMG_MODEL", raising=False)
    return folder


@pytest.fixture
def tiny_copy(tmp_path: Path, tiny_sd: Path) -> Iterator[Path]:
    """A private copy of the tiny pipeline folder, for tests that modify files."""
    target = tmp_path / "tiny-sd"
    shutil.copytree(tiny_sd, target)
    yield target


@pytest.fixture(scope="session")
def tiny_ggml() -> dict[str, Path]:
    """The random SD1 tiny-UNet checkpoint, TAESD and LoRA for stable-diffusion.cpp (cached)."""
    pytest.importorskip("stable_diffusion_cpp")
    from tests.support.tiny_ggml import tiny_checkpoint_path, tiny_lora_path, tiny_taesd_path

    return {
        "model": tiny_checkpoint_path(),
        "taesd": tiny_taesd_path(),
        "lora": tiny_lora_path(),
    }


@pytest.fixture(scope="session")
def ggml_models_dir(tmp_path_factory: pytest.TempPathFactory, tiny_ggml: dict[str, Path]) -> Path:
    """A models dir with the ggml files (hard links where possible) and the seed's YAML shape."""
    from tests.support.tiny_ggml import populate_models_dir

    return populate_models_dir(tmp_path_factory.mktemp("ggml-models"), tiny_ggml)


@pytest.fixture(scope="session")
def conditioned_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seed's image and video YAML files plus tiny.yaml, all on tiny models."""
    from tests.support.conditioned_fixtures import write_models

    return write_models(tmp_path_factory.mktemp("conditioned") / "models")


# A pipeline needs a module its builder does not import (diffusers calls it unguarded).
FAMILY_NEEDS = {"wan_i2v": "ftfy"}


@pytest.fixture(scope="session")
def tiny_family() -> TinyFamily:
    """`tiny_family(name)`: the cached tiny random pipeline folder of a family, built on first use.

    One fixture for every family (names in tests/support/tiny_families.py's TINY_FAMILIES, plus
    "sd" for the tiny SD pipeline), so a parametrised test names families by string and builds
    only the ones its parameters select. A family whose pipeline needs a missing module skips.
    """
    from tests.support.tiny_families import TINY_FAMILIES
    from tests.support.tiny_models import tiny_sd_path

    def build(name: str) -> Path:
        if name == "sd":
            return tiny_sd_path()
        if name in FAMILY_NEEDS:
            pytest.importorskip(FAMILY_NEEDS[name])
        return TINY_FAMILIES[name]()

    return build
