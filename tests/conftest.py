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


ALL_CPUS: set[int] = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set()


def _pin_xdist_worker() -> None:
    """Under pytest-xdist (`make test` runs `-n auto`), give each worker a core of its own (two
    workers a core when there are more workers than cores).

    Every worker would otherwise run torch with a thread per core beside the other workers' threads
    (OpenMP teams spinning against each other); pinned, a worker and the servers and worker
    processes it starts (they inherit the mask) see one core and use one thread."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not name.startswith("gw") or count < 2 or len(ALL_CPUS) < 2:
        return
    cpus = sorted(ALL_CPUS)
    index = int(name[2:])
    if len(cpus) >= count:
        share = len(cpus) // count
        os.sched_setaffinity(0, cpus[index * share : (index + 1) * share])
    else:
        os.sched_setaffinity(0, {cpus[index % len(cpus)]})


_pin_xdist_worker()

# Never reach a model hub from the tests; quiet the libraries' own chatter.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

# Fixtures defined next to what they serve, shared with every test module from here (a module
# that imported them by name would shadow them, and ruff would see an unused import).
pytest_plugins = ["tests.support.fake_hosts"]


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: a worker per physical core (one more was measured slower on 2 cores: the
    workers' torch threads then share cores), at most 4 (each holds torch, tiny models and its
    tests' servers: about 3 GB) and one per 5 GB of memory."""
    from localimg._util.system import physical_cores

    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return max(1, min(4, physical_cores(), int(memory_gb // 5)))


# The slowest test files (about 40-100 s each on 2 cores), started first so that `make test`'s
# workers (one file at a time each, --dist loadfile) do not end with one of them alone.
SLOW_FILES_FIRST = (
    "tests/ray/test_serve.py",
    "tests/backends/test_ggml_families.py",
    "tests/backends/test_ggml_backend.py",
    "tests/backends/test_ggml_cache.py",
    "tests/backends/test_diffusers_families.py",
    "tests/server/test_a1111.py",
    "tests/server/test_lifecycle_routes.py",
    "tests/server/test_openai_api.py",
    "tests/backends/test_batch_invariance.py",
    "tests/engine/test_hires.py",
    "tests/backends/test_ggml_control.py",
    "tests/backends/test_ggml_hires.py",
    "tests/backends/test_diffusers_controlnet.py",
    "tests/server/test_a1111_controlnet.py",
    "tests/server/test_a1111_upscale.py",
    "tests/backends/test_ggml_families_2026.py",
    "tests/backends/test_diffusers_families_qwen_2026.py",
    "tests/backends/test_diffusers_families_krea_ideogram.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The slow files first, everything else in its usual order (a stable sort: every xdist
    worker collects the same order, as xdist requires)."""
    rank = {path: index for index, path in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


@pytest.fixture(scope="module")
def all_cores() -> Iterator[None]:
    """This test process on every core for a module whose processes need several (a Ray
    cluster: its raylet, workers and replicas inherit the mask), then pinned again."""
    if not ALL_CPUS or not hasattr(os, "sched_setaffinity"):
        yield
        return
    pinned = os.sched_getaffinity(0)
    os.sched_setaffinity(0, ALL_CPUS)
    try:
        yield
    finally:
        os.sched_setaffinity(0, pinned)


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
