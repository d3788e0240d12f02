"""`localimg generate --control-image ...`: the ControlNet units the engine receives, and the
refusals of bad control input (one line on stderr, no traceback, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from localimg.errors import InvalidRequest
from localimg.requests import ControlUnit, ImageRequest
from tests.cli.test_generate import run_cli


class Captured(InvalidRequest):
    """What the fake engine raises once it has the request: nothing runs."""


@pytest.fixture
def received(monkeypatch: pytest.MonkeyPatch) -> list[ImageRequest]:
    """The requests `Engine.generate` receives; the call stops there (exit 2, "captured")."""
    from localimg.engine import Engine

    seen: list[ImageRequest] = []

    def capture(self: Any, model: str | None, request: ImageRequest, **_: Any) -> Any:
        seen.append(request)
        raise Captured("captured")

    monkeypatch.setattr(Engine, "generate", capture)
    return seen


def control_png(folder: Path, name: str = "edges.png", color: int = 255) -> Path:
    path = folder / name
    image = Image.new("RGB", (64, 64), (0, 0, 0))
    image.paste((color, color, color), (16, 16, 48, 48))
    image.save(path)
    return path


def generate(tmp_path: Path, *args: str) -> Any:
    return run_cli("generate", "a house", "-m", "tiny", "-o", str(tmp_path / "x.png"), *args)


def only(received: list[ImageRequest]) -> tuple[ControlUnit, ...]:
    assert len(received) == 1
    return received[0].controls


def test_one_control_image_and_net_make_one_unit(
    models_dir: Path, tmp_path: Path, received: list[ImageRequest]
) -> None:
    edges = control_png(tmp_path)
    out = generate(tmp_path, "--control-image", str(edges), "--control-net", "canny")
    assert "captured" in out.stderr
    (unit,) = only(received)
    assert unit.net == "canny" and unit.strength is None  # the YAML's, else 1.0, in the merge
    assert (unit.start, unit.end, unit.preprocess) == (0.0, 1.0, "none")
    assert unit.image.mode == "RGB" and unit.image.size == (64, 64)
    assert unit.image.getpixel((32, 32)) == (255, 255, 255)


def test_pairs_are_matched_in_order(
    models_dir: Path, tmp_path: Path, received: list[ImageRequest]
) -> None:
    a, b = control_png(tmp_path, "a.png", 255), control_png(tmp_path, "b.png", 128)
    generate(
        tmp_path,
        *("--control-image", str(a), "--control-net", "canny"),
        *("--control-image", str(b), "--control-net", "depth"),
        *("--control-strength", "0.5", "--control-strength", "1.5"),
        *("--control-start", "0.1", "--control-end", "0.8"),
        *("--control-preprocess", " canny ", "--control-preprocess", "none"),
    )
    first, second = only(received)
    assert (first.net, first.strength, first.preprocess) == ("canny", 0.5, "canny")
    assert (second.net, second.strength, second.preprocess) == ("depth", 1.5, "none")
    assert first.image.getpixel((32, 32)) == (255, 255, 255)
    assert second.image.getpixel((32, 32)) == (128, 128, 128)
    assert (first.start, first.end) == (second.start, second.end) == (0.1, 0.8)


def test_one_net_applies_to_every_image(
    models_dir: Path, tmp_path: Path, received: list[ImageRequest]
) -> None:
    a, b = control_png(tmp_path, "a.png"), control_png(tmp_path, "b.png")
    generate(
        tmp_path,
        *("--control-image", str(a), "--control-image", str(b)),
        *("--control-net", "union", "--control-strength", "0", "--control-mode", "1"),
    )
    units = only(received)
    assert received[0].extra == {"control_mode": 1}
    assert [u.net for u in units] == ["union", "union"]
    assert [u.strength for u in units] == [0.0, 0.0]


def test_no_control_image_no_units(
    models_dir: Path, tmp_path: Path, received: list[ImageRequest]
) -> None:
    generate(tmp_path)
    assert only(received) == ()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--control-image", "{dir}/missing.png"], "--control-image: "),
        (["--control-image", "{dir}/notes.txt"], "--control-image"),
        (["--control-image", "{edges}", "--control-strength", "2.5"], "--control-strength must"),
        (["--control-image", "{edges}", "--control-strength", "-1"], "between 0 and 2"),
        (
            ["--control-image", "{edges}", "--control-net", "a", "--control-net", "b"],
            "2 ControlNets (--control-net) for 1 --control-image",
        ),
        (["--control-net", "canny"], "--control-net given without --control-image"),
        (
            ["--control-image", "{edges}", "--control-start", "0.9", "--control-end", "0.2"],
            "--control-start and --control-end must satisfy",
        ),
        (
            [*(["--control-image", "{edges}"] * 3), *(["--control-strength", "1"] * 2)],
            "2 values of --control-strength for 3 --control-image",
        ),
    ],
)
def test_bad_control_input_is_one_line_and_writes_nothing(
    models_dir: Path,
    tmp_path: Path,
    received: list[ImageRequest],
    args: list[str],
    expected: str,
) -> None:
    edges = control_png(tmp_path)
    (tmp_path / "notes.txt").write_text("not an image", encoding="utf-8")
    filled = [arg.format(dir=tmp_path, edges=edges) for arg in args]
    out = generate(tmp_path, *filled)
    assert out.returncode == 2, out.stderr
    assert expected in out.stderr, out.stderr
    assert out.stderr.strip().startswith("error:") and len(out.stderr.strip().splitlines()) == 1
    assert "Traceback" not in out.stderr
    assert received == [] and not (tmp_path / "x.png").exists()


def test_an_unknown_preprocessor_is_refused_naming_the_available_ones(
    models_dir: Path, tmp_path: Path
) -> None:
    edges = control_png(tmp_path)
    args = ("--control-image", str(edges), "--control-net", "canny")
    out = generate(tmp_path, *args, "--control-preprocess", "sketch")
    assert out.returncode == 2, out.stderr
    assert "no ControlNet preprocessor 'sketch'; available: none, canny, depth" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert not (tmp_path / "x.png").exists()


def test_a_unit_with_no_controlnet_anywhere_is_refused(models_dir: Path, tmp_path: Path) -> None:
    """The tiny model's YAML has no control_net: the merge refuses before anything runs."""
    edges = control_png(tmp_path)
    out = generate(tmp_path, "--control-image", str(edges))
    assert out.returncode == 2, out.stderr
    assert "needs a ControlNet" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "x.png").exists()


def test_models_list_shows_the_controlnets(models_dir: Path) -> None:
    folder = models_dir / "controlnet"
    (folder / "canny-sd15").mkdir(parents=True)
    (folder / "canny-sd15" / "config.json").write_text("{}", encoding="utf-8")
    (folder / "depth.safetensors").write_bytes(b"\0" * 16)
    (folder / "notes.txt").write_text("not a ControlNet", encoding="utf-8")
    out = run_cli("models", "list", "--json")
    assert out.returncode == 0, out.stderr
    rows = {row["name"]: row for row in json.loads(out.stdout)}
    assert rows["tiny"]["kind"] == "model"
    assert rows["canny-sd15"]["kind"] == rows["depth"]["kind"] == "controlnet"
    assert (rows["canny-sd15"]["format"], rows["depth"]["format"]) == ("folder", "file")
    assert rows["depth"]["file"] == str(folder / "depth.safetensors")
    assert "notes" not in rows
    table = run_cli("models", "list")
    assert "ControlNets in" in table.stdout
    assert "canny-sd15" in table.stdout and "depth.safetensors" in table.stdout


# -- end to end: the tiny pipeline and the tiny ControlNet --------------------------------------


@pytest.fixture
def with_controlnet(models_dir: Path) -> Path:
    """`models_dir` with the tiny SD ControlNet installed as controlnet/canny-sd."""
    from tests.support.tiny_controlnets import tiny_sd_controlnet_path

    (models_dir / "controlnet").mkdir()
    (models_dir / "controlnet" / "canny-sd").symlink_to(tiny_sd_controlnet_path())
    return models_dir


def pixels_of(tmp_path: Path, name: str, *args: str) -> np.ndarray:
    out = tmp_path / f"{name}.png"
    proc = run_cli("generate", "a house", "-m", "tiny", "--seed", "5", "-o", str(out), *args)
    assert proc.returncode == 0, proc.stderr
    return np.asarray(Image.open(out).convert("RGB"), dtype=np.int16)


def test_the_control_image_changes_the_written_image(with_controlnet: Path, tmp_path: Path) -> None:
    edges = control_png(tmp_path)
    other = tmp_path / "other.png"
    Image.new("RGB", (64, 64), (255, 255, 255)).save(other)
    plain = pixels_of(tmp_path, "plain")
    steered = pixels_of(tmp_path, "a", "--control-image", str(edges), "--control-net", "canny-sd")
    otherwise = pixels_of(tmp_path, "b", "--control-image", str(other), "--control-net", "canny-sd")
    zero = pixels_of(
        tmp_path,
        "zero",
        *("--control-image", str(edges), "--control-net", "canny-sd"),
        *("--control-strength", "0"),
    )
    assert not np.array_equal(plain, steered)
    assert not np.array_equal(steered, otherwise)
    assert np.array_equal(plain, zero)


def test_json_names_the_units(with_controlnet: Path, tmp_path: Path) -> None:
    edges = control_png(tmp_path)
    out = run_cli(
        *("generate", "a house", "-m", "tiny", "-o", str(tmp_path / "j.png"), "--json"),
        *("--control-image", str(edges), "--control-net", "canny-sd", "--control-end", "0.5"),
    )
    assert out.returncode == 0, out.stderr
    (unit,) = json.loads(out.stdout)["controls"]
    assert unit == {"net": "canny-sd", "strength": 1.0, "start": 0.0, "end": 0.5}


def test_the_yaml_control_net_serves_a_bare_control_image(
    with_controlnet: Path, tmp_path: Path
) -> None:
    yaml_path = with_controlnet / "tiny.yaml"
    yaml_path.write_text(
        yaml_path.read_text(encoding="utf-8") + "control_net: canny-sd\n", encoding="utf-8"
    )
    edges = control_png(tmp_path)
    named = pixels_of(tmp_path, "named", "--control-image", str(edges), "--control-net", "canny-sd")
    bare = pixels_of(tmp_path, "bare", "--control-image", str(edges))
    assert np.array_equal(named, bare)
