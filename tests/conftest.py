"""Shared fixtures: tiny random models built offline and cached, models dirs with YAML for them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

# Never reach a model hub from the tests; quiet the libraries' own chatter.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")


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


@pytest.fixture(scope="session")
def tiny_z_image() -> Path:
    """A tiny random ZImagePipeline folder (sizes in multiples of 4), built once and cached."""
    from tests.support.tiny_families import tiny_z_image_path

    return tiny_z_image_path()


@pytest.fixture(scope="session")
def tiny_flux2_klein() -> Path:
    """A tiny random Flux2KleinPipeline folder (distilled like klein 4B; multiples of 4), cached."""
    from tests.support.tiny_families import tiny_flux2_klein_path

    return tiny_flux2_klein_path()


@pytest.fixture(scope="session")
def tiny_flux2() -> Path:
    """A tiny random Flux2Pipeline folder (FLUX.2 [dev]-like, multiples of 4), cached."""
    from tests.support.tiny_families import tiny_flux2_path

    return tiny_flux2_path()


@pytest.fixture(scope="session")
def tiny_chroma() -> Path:
    """A tiny random ChromaPipeline folder (multiples of 4), built once and cached."""
    from tests.support.tiny_families import tiny_chroma_path

    return tiny_chroma_path()


@pytest.fixture(scope="session")
def tiny_flux_kontext() -> Path:
    """A tiny random FluxKontextPipeline folder (one input image, multiples of 16), cached."""
    from tests.support.tiny_families import tiny_flux_kontext_path

    return tiny_flux_kontext_path()


@pytest.fixture(scope="session")
def tiny_qwen_image() -> Path:
    """A tiny random QwenImagePipeline folder (multiples of 16), built once and cached."""
    from tests.support.tiny_families import tiny_qwen_image_path

    return tiny_qwen_image_path()


@pytest.fixture(scope="session")
def tiny_qwen_image_edit_plus() -> Path:
    """A tiny QwenImageEditPlusPipeline folder (its processor built without torchvision)."""
    from tests.support.tiny_families import tiny_qwen_image_edit_plus_path

    return tiny_qwen_image_edit_plus_path()


@pytest.fixture(scope="session")
def tiny_wan() -> Path:
    """A tiny random WanPipeline folder (Wan 2.1 T2V: multiples of 16, 4k+1 frames), cached."""
    from tests.support.tiny_families import tiny_wan_path

    return tiny_wan_path()


@pytest.fixture(scope="session")
def tiny_wan_i2v() -> Path:
    """A tiny WanImageToVideoPipeline folder (Wan 2.2 TI2V-5B style); skips without ftfy."""
    pytest.importorskip("ftfy")
    from tests.support.tiny_families import tiny_wan_i2v_path

    return tiny_wan_i2v_path()


@pytest.fixture(scope="session")
def tiny_wan22_ti2v() -> Path:
    """The tiny Wan 2.2 TI2V-5B saved as a WanPipeline (expand_timesteps), cached."""
    from tests.support.tiny_families import tiny_wan22_ti2v_path

    return tiny_wan22_ti2v_path()
