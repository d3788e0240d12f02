"""Batched diffusers calls give each image the bits it gets alone, on every CPU capability torch
can run on this machine (AVX-512, AVX2, the plain C++ kernels): the element-wise regrouping
(backends/diffusers/pipeline/pointwise_invariance.py) at the level of single operations, and the
pipeline batch tests rerun in a fresh process under each `ATEN_CPU_CAPABILITY` other than this
one."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from localimg.backends.diffusers.pipeline.pointwise_invariance import (  # noqa: E402
    PointwiseRegrouping,
    lanes_aligned,
)

ROOT = Path(__file__).resolve().parents[2]
# torch's x86 kernel levels, lowest first; ATEN_CPU_CAPABILITY takes these names.
LEVELS = ("default", "avx2", "avx512")


def cpu_levels() -> list[str]:
    """The levels this CPU can run (from /proc/cpuinfo, as torch's own check reads cpuid)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return [torch.backends.cpu.get_cpu_capability().lower()]
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    levels = ["default"]
    if {"avx2", "fma"} <= flags:
        levels.append("avx2")
        if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
            levels.append("avx512")
    return levels


# -- the decision and the operations -------------------------------------------------------


def test_widths_of_whole_register_pairs_stay_batched() -> None:
    assert lanes_aligned(2 * 64, 2, 64, simple=True, threads=1)
    assert lanes_aligned(4 * 4096 * 3072, 4, 3072, simple=True, threads=2)
    # 48 = 3 x 16: whole AVX-512 registers, but not whole pairs, so the tail goes scalar
    assert not lanes_aligned(2 * 48, 2, 48, simple=True, threads=1)
    # a batch's elements split across 7 threads at a boundary inside a register pair
    assert not lanes_aligned(2 * 64 * 1001, 2, 64, simple=True, threads=7)
    # broadcast (not one flat run): the innermost width counts too
    assert not lanes_aligned(2 * 48 * 64, 2, 48, simple=False, threads=1)


def lone_rows(x: Any, image: int, images: int, groups: int) -> Any:
    """Image `image`'s rows of a batch of `images` (k groups of N), as its lone call holds them."""
    return x.reshape(groups, images, *x.shape[1:])[:, image].contiguous()


OPERATIONS: dict[str, Callable[[Any, Any], Any]] = {
    "silu": lambda x, _y: torch.nn.functional.silu(x),
    "gelu": lambda x, _y: torch.nn.functional.gelu(x, approximate="tanh"),
    "exp-sin": lambda x, _y: torch.sin(x).exp(),
    "in-place": lambda x, _y: torch.nn.functional.silu(x.clone(), inplace=True),
    "broadcast": lambda x, y: torch.sigmoid(x * y),
    "two-batched": lambda x, _y: torch.tanh(x) * torch.cos(x + 1),
}


@pytest.mark.parametrize("groups", [1, 2], ids=["rows-per-image-1", "cfg-rows-per-image-2"])
@pytest.mark.parametrize("width", [48, 40, 7, 64])
@pytest.mark.parametrize("name", list(OPERATIONS))
def test_each_image_of_a_batch_gets_its_lone_bits(name: str, width: int, groups: int) -> None:
    images = 3
    operation = OPERATIONS[name]
    generator = torch.Generator().manual_seed(width)
    batch = torch.randn(groups * images, 5, width, generator=generator) * 4
    scale = torch.randn(1, 1, width, generator=generator)
    with torch.inference_mode():
        with PointwiseRegrouping(images).active():
            together = operation(batch, scale)
        for image in range(images):
            alone = operation(lone_rows(batch, image, images, groups), scale)
            mine = lone_rows(together, image, images, groups)
            assert torch.equal(alone, mine), (name, width, groups, image)


def test_without_regrouping_avx512_rounds_a_batch_differently() -> None:
    """The failure the regrouping prevents, seen on this machine's own kernels."""
    if torch.backends.cpu.get_cpu_capability() != "AVX512":
        pytest.skip("torch runs its AVX-512 kernels only on CPUs that have AVX-512")
    images, groups, width = 3, 1, 40
    batch = torch.randn(groups * images, 5, width, generator=torch.Generator().manual_seed(40)) * 4
    gelu = OPERATIONS["gelu"]
    together = gelu(batch, None)
    differing = [
        image
        for image in range(images)
        if not torch.equal(
            gelu(lone_rows(batch, image, images, groups), None),
            lone_rows(together, image, images, groups),
        )
    ]
    assert differing


def test_tensors_that_are_not_per_image_are_left_alone() -> None:
    """A scheduler's 1000 alphas or a 5-row table in a batch of 2 are computed as the lone call
    computes them: splitting them would move their scalar remainder instead of keeping it."""
    gelu = OPERATIONS["gelu"]
    alphas = torch.linspace(-3, 3, 1000)
    table = torch.linspace(-3, 3, 5 * 48).reshape(5, 48)
    with torch.inference_mode():
        alone = [gelu(alphas, None), gelu(table, None)]
        with PointwiseRegrouping(2).active():
            batched = [gelu(alphas, None), gelu(table, None)]
    assert all(torch.equal(a, b) for a, b in zip(alone, batched, strict=True))


# -- every CPU capability ----------------------------------------------------------------------

BATCH_TESTS = [
    "tests/backends/test_diffusers_families.py",
    "tests/backends/test_diffusers_batching.py",
    "-k",
    "gives_each_image_what_it_gets_alone or run_as_one_batch_with_their_own",
]


@pytest.mark.slow
@pytest.mark.parametrize("level", LEVELS)
def test_batches_are_bit_identical_under_every_cpu_capability(level: str) -> None:
    """The batch tests of the diffusers families and SD again, in a process whose torch runs
    `level`'s kernels (torch reads ATEN_CPU_CAPABILITY once, when it starts)."""
    if level not in cpu_levels():
        pytest.skip(f"this CPU cannot run torch's {level} kernels")
    if level == torch.backends.cpu.get_cpu_capability().lower():
        pytest.skip(f"{level} is this process's own level: the batch tests run here already")
    env = {**os.environ, "ATEN_CPU_CAPABILITY": level}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *BATCH_TESTS]
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    tail = (done.stdout + done.stderr)[-3000:]
    assert done.returncode == 0, tail
    assert " passed" in tail and "failed" not in tail and "skipped" not in tail, tail
