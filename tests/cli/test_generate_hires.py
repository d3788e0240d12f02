"""End-to-end: `localimg generate --hires-*` on the tiny random diffusers pipeline."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from tests.cli.test_generate import run_cli

SMALL = ("--size", "32x32", "--steps", "2", "--seed", "3")


def test_hires_options_make_the_final_size_and_json_shows_them(
    models_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "otter.png"
    hires = ("--hires-scale", "2", "--hires-upscaler", "Lanczos", "--hires-steps", "3")
    proc = run_cli(
        "generate", "an otter", *SMALL, *hires, "--hires-denoise", "0.5", "-o", str(out), "--json"
    )
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert (shown["width"], shown["height"]) == (32, 32)
    assert shown["hires"] == {
        "scale": 2.0,
        "width": 64,
        "height": 64,
        "upscaler": "lanczos",
        "steps": 3,
        "denoise": 0.5,
    }
    image = Image.open(out)
    assert image.size == (64, 64)
    params = image.text["parameters"]  # type: ignore[attr-defined]
    assert "Size: 32x32" in params and "Hires upscale: 2" in params
    assert "Hires upscaler: Lanczos" in params and "Denoising strength: 0.5" in params

    sized = tmp_path / "sized.png"
    proc = run_cli("generate", "an otter", *SMALL, "--hires-size", "64x48", "-o", str(sized))
    assert proc.returncode == 0, proc.stderr
    assert Image.open(sized).size == (64, 48) and "→ 64x48 (latent" in proc.stdout


def test_no_hires_turns_the_yamls_block_off(models_dir: Path, tmp_path: Path) -> None:
    yaml = (models_dir / "tiny.yaml").read_text(encoding="utf-8")
    (models_dir / "tiny.yaml").write_text(yaml + "hires:\n  upscaler: nearest\n  steps: 2\n")
    on, off = tmp_path / "on.png", tmp_path / "off.png"
    assert run_cli("generate", "an otter", *SMALL, "-o", str(on)).returncode == 0
    assert Image.open(on).size == (64, 64)
    assert run_cli("generate", "an otter", *SMALL, "--no-hires", "-o", str(off)).returncode == 0
    assert Image.open(off).size == (32, 32)


def test_bad_hires_options_are_one_line_errors(models_dir: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "x.png")
    for args, words in (
        (("--hires-upscaler", "sharpest"), "no hires upscaler named 'sharpest'"),
        (("--hires-scale", "9"), "hires_scale must be between 1 and 8"),
        (("--no-hires", "--hires-steps", "3"), "--no-hires cannot be combined"),
        (("--hires-size", "big"), "is not WIDTHxHEIGHT"),
    ):
        proc = run_cli("generate", "an otter", *SMALL, *args, "-o", out)
        assert proc.returncode != 0 and words in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not Path(out).exists()
