"""`localimg upscale` end to end: files written beside the inputs or where -o says, A1111's
postprocess parameters, a model from upscale_models/, one-line errors that write nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from typer.testing import CliRunner

from localimg.cli import app
from localimg.media.encode import read_parameters
from tests.support.tiny_esrgan import not_rrdb, tiny_esrgan

INPUT_PARAMETERS = "a fox\nSteps: 4, Sampler: euler, Seed: 7, Size: 24x16"


def write_photo(path: Path, width: int = 24, height: int = 16, parameters: str = "") -> Path:
    pixels = np.random.default_rng(2).integers(0, 256, (height, width, 3), dtype=np.uint8)
    info = PngImagePlugin.PngInfo()
    if parameters:
        info.add_text("parameters", parameters)
    Image.fromarray(pixels).save(path, pnginfo=info)
    return path


@pytest.fixture
def models(tmp_path: Path) -> Path:
    folder = tmp_path / "models" / "upscale_models"
    folder.mkdir(parents=True)
    (folder / "tiny-x2.safetensors").write_bytes(tiny_esrgan(2).read_bytes())
    return tmp_path / "models"


def invoke(models: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["upscale", *args, "--models-path", str(models)])
    return result.exit_code, result.stdout, result.stderr


def files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_the_default_is_lanczos_x2_beside_the_input(models: Path, tmp_path: Path) -> None:
    source = write_photo(tmp_path / "fox.png", parameters=INPUT_PARAMETERS)
    code, out, err = invoke(models, str(source))
    assert code == 0, err
    target = tmp_path / "fox-x2.png"
    assert out.strip() == str(target)
    with Image.open(target) as image:
        assert image.size == (48, 32)
    assert read_parameters(target) == (
        f"{INPUT_PARAMETERS}, Postprocess upscale by: 2, Postprocess upscaler: lanczos"
    )


def test_a_model_writes_where_o_says_with_its_name(models: Path, tmp_path: Path) -> None:
    pytest.importorskip("stable_diffusion_cpp")
    source = write_photo(tmp_path / "cat.png")
    target = tmp_path / "out" / "big.webp"
    code, _, err = invoke(models, str(source), "-o", str(target), "-u", "TINY-X2", "-s", "3")
    assert code == 0, err
    with Image.open(target) as image:
        assert image.size == (72, 48) and image.format == "WEBP"
    assert read_parameters(target) == "Postprocess upscale by: 3, Postprocess upscaler: tiny-x2"


def test_several_images_go_into_the_output_folder(models: Path, tmp_path: Path) -> None:
    first, second = write_photo(tmp_path / "a.png"), write_photo(tmp_path / "b.png", 10, 10)
    out_dir = tmp_path / "big"
    code, out, err = invoke(models, str(first), str(second), "-o", str(out_dir), "--json")
    assert code == 0, err
    assert [row["file"] for row in json.loads(out)] == [
        str(out_dir / "a-x2.png"),
        str(out_dir / "b-x2.png"),
    ]
    with Image.open(out_dir / "b-x2.png") as image:
        assert image.size == (20, 20)


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--scale", "0"], 2, "scale must be a number above 0 and at most 8, not 0"),
        (["--scale", "9"], 2, "at most 8, not 9"),
        (["--upscaler", "4x-UltraSharp"], 3, "installed: bicubic, lanczos, nearest, tiny-x2"),
    ],
)
def test_bad_options_are_one_line_and_write_nothing(
    models: Path, tmp_path: Path, args: list[str], code: int, words: str
) -> None:
    source = write_photo(tmp_path / "fox.png")
    before = files(tmp_path)
    exit_code, out, err = invoke(models, str(source), *args)
    assert exit_code == code and words in " ".join(err.split())
    assert err.strip().startswith("error:") and "Traceback" not in err and out == ""
    assert files(tmp_path) == before


def test_a_file_that_is_not_an_image_is_refused(models: Path, tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    good = write_photo(tmp_path / "fox.png")
    before = files(tmp_path)
    exit_code, _, err = invoke(models, str(good), str(text))
    assert exit_code == 2 and err.strip().startswith("error:") and "IMAGE" in err
    assert files(tmp_path) == before  # the good one is not written either


def test_a_non_rrdb_upscaler_file_is_refused_by_name(models: Path, tmp_path: Path) -> None:
    pytest.importorskip("stable_diffusion_cpp")
    from localimg.backends.side.spandrel_upscaler import available

    if available():
        pytest.skip("spandrel is installed: the file would go to spandrel")
    not_rrdb(models / "upscale_models" / "swinir.safetensors")
    source = write_photo(tmp_path / "fox.png")
    exit_code, _, err = invoke(models, str(source), "-u", "swinir")
    assert exit_code == 3 and "not an ESRGAN/RRDB model" in " ".join(err.split())
    assert not (tmp_path / "fox-x2.png").exists()


def test_models_list_shows_the_upscalers(models: Path) -> None:
    not_rrdb(models / "upscale_models" / "swinir.safetensors")
    result = CliRunner().invoke(app, ["models", "list", "--json", "--models-path", str(models)])
    rows = {row["name"]: row for row in json.loads(result.stdout) if row["kind"] == "upscaler"}
    assert rows["tiny-x2"]["scale"] == 2 and rows["tiny-x2"]["runs"] == "stable-diffusion.cpp"
    assert rows["swinir"]["runs"] in (None, "spandrel")
    table = CliRunner().invoke(app, ["models", "list", "--models-path", str(models)])
    assert "Upscalers in" in table.stdout and "tiny-x2" in table.stdout


def test_the_console_script_upscales_with_a_model(models: Path, tmp_path: Path) -> None:
    pytest.importorskip("stable_diffusion_cpp")
    source = write_photo(tmp_path / "fox.png")
    script = Path(sys.executable).with_name("localimg")
    command = [str(script), "upscale", str(source), "-u", "tiny-x2", "-s", "4"]
    proc = subprocess.run(
        [*command, "--models-path", str(models)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "fox-x4.png")
    with Image.open(tmp_path / "fox-x4.png") as image:
        assert image.size == (96, 64)


def test_help_loads_no_native_library_or_torch() -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from localimg.cli import app; "
        "r = CliRunner().invoke(app, ['upscale', '--help']); assert r.exit_code == 0, r.output; "
        "loaded = {'stable_diffusion_cpp', 'torch', 'spandrel'} & set(sys.modules); "
        "assert not loaded, loaded"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
