"""End-to-end: the real `localimg generate` CLI on the tiny random diffusers pipeline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


class Outcome:
    """What a CLI run left: exit code, stdout and stderr."""

    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_cli(*args: str) -> Outcome:
    """The real CLI app in this process (a new interpreter per call costs ~7 s of imports)."""
    from typer.testing import CliRunner

    from localimg.cli import app

    result = CliRunner().invoke(app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Outcome(result.exit_code, result.stdout, result.stderr)


def run_process(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it: a new `python -m localimg` process."""
    return subprocess.run(
        [sys.executable, "-m", "localimg", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_generate_writes_numbered_pngs_with_metadata(models_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "otter.png"
    proc = run_cli(
        "generate",
        "a cute baby sea otter|blurry, malformed",
        "--seed",
        "42",
        "-n",
        "2",
        "-o",
        str(out),
        "--json",
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
def test_output_format_by_extension(
    models_dir: Path, tmp_path: Path, suffix: str, fmt: str
) -> None:
    out = tmp_path / f"img{suffix}"
    proc = run_cli("generate", "otter", "--seed", "1", "-o", str(out), "--size", "72x48")
    assert proc.returncode == 0, proc.stderr
    image = Image.open(out)
    assert image.format == fmt and image.size == (72, 48)
    from localimg.media.encode import read_parameters

    assert "Seed: 1," in (read_parameters(out) or "")


def test_console_script_end_to_end(models_dir: Path, tmp_path: Path) -> None:
    """One run through a real process, as a user types it."""
    out = tmp_path / "otter.png"
    proc = run_process("generate", "a cute baby sea otter|blurry, malformed", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert Image.open(out).size == (64, 64)
    assert str(out) in proc.stdout and "seed" in proc.stdout


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from localimg.cli import app; "
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
        "r = CliRunner().invoke(app, ['generate', '--help']); assert r.exit_code == 0, r.output; "
        "bad = [m for m in ('torch', 'diffusers', 'transformers', 'stable_diffusion_cpp') "
        "if m in sys.modules]; print(bad); assert not bad"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def write_yaml(models_dir: Path, name: str, body: str) -> None:
    (models_dir / f"{name}.yaml").write_text(body, encoding="utf-8")


@pytest.mark.parametrize(
    "setup,args,expected",
    [
        (("bad", "name: bad\nparameters: [\n"), ["-m", "bad"], "invalid YAML at line"),
        (
            ("typed", "name: typed\nparameters:\n  model: a/b\nstep: lots\n"),
            ["-m", "typed"],
            "key 'step'",
        ),
        (
            ("be", "name: be\nbackend: nope\nparameters:\n  model: a/b\n"),
            ["-m", "be"],
            "unknown backend 'nope'",
        ),
        (None, ["-m", "tiny", "--scheduler", "fastest"], "unknown scheduler 'fastest'"),
        (
            ("mf", "name: mf\nparameters:\n  model: gone.safetensors\n"),
            ["-m", "mf"],
            "model file 'gone.safetensors' not found",
        ),
        (None, ["-m", "tiny", "--size", "512"], "size '512' is not WIDTHxHEIGHT"),
        (None, ["-m", "tiny", "--size", "100x64"], "not a multiple of 8"),
        (None, ["-m", "tiny", "--size", "99999x64"], "out of range"),
        (None, ["-m", "tiny", "-n", "0"], "n must be between 1 and 10"),
        (None, ["-m", "tiny", "--steps", "0"], "steps must be between"),
        (None, ["-m", "tiny", "--seed", "-1"], "seed must be between"),
        (None, ["-m", "tiny", "-o", "x.bmp"], "unsupported image format"),
        (None, ["-m", "tiny", "--quality", "50"], "--quality applies to .jpg and .webp"),
        (None, ["-m", "tinny"], "Did you mean tiny"),
    ],
)
def test_bad_input_gives_one_line_error(
    models_dir: Path, tmp_path: Path, setup: tuple[str, str] | None, args: list[str], expected: str
) -> None:
    if setup:
        write_yaml(models_dir, *setup)
    out = run_cli("generate", "otter", "-o", str(tmp_path / "x.png"), *args)
    assert out.returncode != 0
    assert expected in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().startswith("error:")
    assert not (tmp_path / "x.png").exists()


def test_default_model_offline_says_how_to_get_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCALIMG_MODELS_PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("LOCALIMG_MODEL", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    out = run_cli("generate", "otter", "-o", str(tmp_path / "x.png"))
    assert out.returncode == 3
    assert "stabilityai/sd-turbo" in out.stderr and "--model" in out.stderr


def test_models_list(models_dir: Path) -> None:
    write_yaml(models_dir, "broken", "name: [\n")
    out = run_cli("models", "list", "--json")
    assert out.returncode == 0
    rows = {row["name"]: row for row in json.loads(out.stdout)}
    assert rows["tiny"]["backend"] == "diffusers" and rows["tiny"]["error"] is None
    assert "invalid YAML" in rows["broken"]["error"]
    table = run_cli("models", "list")
    assert "tiny" in table.stdout and "diffusers" in table.stdout


def test_env_default_model_and_explicit_model(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_yaml(
        models_dir,
        "other",
        (models_dir / "tiny.yaml")
        .read_text()
        .replace("name: tiny", "name: other")
        .replace("step: 4", "step: 2"),
    )
    out = run_cli("generate", "otter", "-o", str(tmp_path / "x.png"), "--json")
    assert out.returncode == 2 and "several models" in out.stderr
    monkeypatch.setenv("LOCALIMG_MODEL", "other")
    out = run_cli("generate", "otter", "-o", str(tmp_path / "x.png"), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["steps"] == 2
    out = run_cli(
        "generate",
        "otter",
        "-m",
        "tiny",
        "--steps",
        "3",
        "--cfg-scale",
        "2.5",
        "--scheduler",
        "euler_a",
        "-o",
        str(tmp_path / "y.png"),
        "--json",
    )
    result = json.loads(out.stdout)
    assert result["steps"] == 3 and result["cfg_scale"] == 2.5 and result["scheduler"] == "Euler a"


def test_error_text_in_brackets_is_shown(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import localimg.backends as registry

    monkeypatch.setitem(registry.BUILTIN, "stablediffusion-ggml", "localimg.backends.absent:X")
    write_yaml(
        models_dir, "g", "name: g\nbackend: stablediffusion-ggml\nparameters:\n  model: m.gguf\n"
    )
    out = run_cli("generate", "otter", "-m", "g")
    assert out.returncode == 4
    assert "pip install 'localimg[ggml]'" in out.stderr


def test_several_images_are_not_silently_dropped(models_dir: Path, tmp_path: Path) -> None:
    """`--image` twice is a reference edit: an SD model refuses it instead of keeping one."""
    from PIL import Image

    paths = []
    for i, color in enumerate(("red", "blue")):
        path = tmp_path / f"in{i}.png"
        Image.new("RGB", (64, 64), color).save(path)
        paths.append(str(path))
    mask = tmp_path / "mask.png"
    Image.new("L", (64, 64), 255).save(mask)
    two = ["--image", paths[0], "--image", paths[1]]
    cases = [
        (two, "input image"),
        ([*two, "--mask", str(mask)], "a mask applies to one input image"),
        ([*two, "--mode", "img2img"], "takes one input image"),
    ]
    for args, expected in cases:
        out = run_cli("generate", "otter", "-m", "tiny", "-o", str(tmp_path / "x.png"), *args)
        assert out.returncode == 2, out.stderr
        assert expected in out.stderr and out.stderr.strip().startswith("error:"), out.stderr
        assert "Traceback" not in out.stderr and not (tmp_path / "x.png").exists()
