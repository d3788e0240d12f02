"""End-to-end: the real `localimg generate` CLI on the tiny random diffusers pipeline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "localimg", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_generate_writes_numbered_pngs_with_metadata(models_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "otter.png"
    proc = run_cli(
        "generate", "a cute baby sea otter|blurry, malformed", "--seed", "42", "-n", "2",
        "-o", str(out), "--json",
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    paths = [tmp_path / "otter-1.png", tmp_path / "otter-2.png"]
    assert [img["path"] for img in result["images"]] == [str(p) for p in paths]
    assert [img["seed"] for img in result["images"]] == [42, 43]
    assert result["steps"] == 4 and result["cfg_scale"] == 7.0
    for path, seed in zip(paths, (42, 43), strict=True):
        image = Image.open(path)
        assert image.format == "PNG" and image.size == (64, 64)
        params = image.text["parameters"]  # type: ignore[attr-defined]
        assert params.startswith("a cute baby sea otter\nNegative prompt: blurry, malformed\n")
        assert f"Seed: {seed}," in params and "Steps: 4," in params and "Size: 64x64" in params
    assert not np.array_equal(pixels(paths[0]), pixels(paths[1]))


def test_same_seed_same_pixels_other_seed_other_pixels(models_dir: Path, tmp_path: Path) -> None:
    a, b, c = (tmp_path / f"{name}.png" for name in "abc")
    for path, seed in ((a, "7"), (b, "7"), (c, "8")):
        proc = run_cli("generate", "otter", "--seed", seed, "-o", str(path))
        assert proc.returncode == 0, proc.stderr
    assert np.array_equal(pixels(a), pixels(b))
    assert not np.array_equal(pixels(a), pixels(c))


def test_seed_zero_is_a_seed(models_dir: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    for path in (a, b):
        assert run_cli("generate", "otter", "--seed", "0", "-o", str(path)).returncode == 0
    assert np.array_equal(pixels(a), pixels(b))
    assert "Seed: 0," in Image.open(a).text["parameters"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("suffix,fmt", [(".jpg", "JPEG"), (".webp", "WEBP")])
def test_output_format_by_extension(models_dir: Path, tmp_path: Path, suffix: str, fmt: str) -> None:
    out = tmp_path / f"img{suffix}"
    proc = run_cli("generate", "otter", "--seed", "1", "-o", str(out), "--size", "72x48")
    assert proc.returncode == 0, proc.stderr
    image = Image.open(out)
    assert image.format == fmt and image.size == (72, 48)
    from localimg.images import read_parameters

    assert "Seed: 1," in (read_parameters(out) or "")
