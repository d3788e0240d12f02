"""The models directory's controlnet/ folder: what is listed, and what a control_net names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localimg.config import CONTROLNET_FOLDER, controlnet_items, resolve_controlnet
from localimg.errors import ModelNotFound


def install(models: Path) -> Path:
    folder = models / CONTROLNET_FOLDER
    (folder / "canny-sd15").mkdir(parents=True)
    (folder / "canny-sd15" / "config.json").write_text(json.dumps({"_class_name": "X"}))
    (folder / "depth_xl.safetensors").write_bytes(b"0")
    (folder / "openpose.pth").write_bytes(b"0")
    (folder / ".hidden.safetensors").write_bytes(b"0")
    (folder / "notes.txt").write_text("not a model")
    (folder / "empty-folder").mkdir()
    return folder


def test_items_list_folders_and_weight_files_but_not_hidden_or_other_files(tmp_path: Path) -> None:
    folder = install(tmp_path)
    assert controlnet_items(tmp_path) == [
        {"name": "canny-sd15", "path": str(folder / "canny-sd15"), "kind": "folder"},
        {"name": "depth_xl", "path": str(folder / "depth_xl.safetensors"), "kind": "file"},
        {"name": "openpose", "path": str(folder / "openpose.pth"), "kind": "file"},
    ]


def test_no_folder_lists_nothing(tmp_path: Path) -> None:
    assert controlnet_items(tmp_path) == []


def test_a_name_resolves_with_or_without_its_extension(tmp_path: Path) -> None:
    folder = install(tmp_path)
    assert resolve_controlnet("depth_xl", tmp_path) == str(folder / "depth_xl.safetensors")
    assert resolve_controlnet("depth_xl.safetensors", tmp_path) == str(
        folder / "depth_xl.safetensors"
    )
    assert resolve_controlnet("canny-sd15", tmp_path) == str(folder / "canny-sd15")


def test_an_existing_path_and_a_repo_id_are_kept(tmp_path: Path) -> None:
    install(tmp_path)
    elsewhere = tmp_path / "elsewhere.safetensors"
    elsewhere.write_bytes(b"0")
    assert resolve_controlnet(str(elsewhere), tmp_path) == str(elsewhere)
    repo = "lllyasviel/control_v11p_sd15_canny"
    assert resolve_controlnet(repo, tmp_path) == repo


def test_a_path_relative_to_the_models_directory_resolves(tmp_path: Path) -> None:
    folder = install(tmp_path)
    assert resolve_controlnet("controlnet/openpose.pth", tmp_path) == str(folder / "openpose.pth")


def test_an_unknown_name_names_the_installed_and_the_close_ones(tmp_path: Path) -> None:
    install(tmp_path)
    with pytest.raises(ModelNotFound) as caught:
        resolve_controlnet("canny-sd", tmp_path)
    assert caught.value.param == "control_net"
    message = caught.value.message
    assert "did you mean 'canny-sd15'" in message
    assert "canny-sd15, depth_xl, openpose" in message


def test_an_unknown_name_with_nothing_installed_says_so(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="no ControlNet is installed"):
        resolve_controlnet("canny", tmp_path)
