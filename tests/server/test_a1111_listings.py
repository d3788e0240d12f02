"""A1111's LoRA and embedding lists: the models dir's `loras/` and `embeddings/` folders, each
embedding sorted into loaded or skipped by whether its width fits the current model (the tiny
SD's text encoder is 32 wide), with the widths read from headers, never a loaded model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from localimg.prompts.embeddings import list_embeddings
from localimg.prompts.text_width import text_widths
from localimg.server.a1111.listings import table
from tests.support.served import Served, ServeSpec, tiny_models
from tests.support.tiny_models import build_tiny_lora

KEY = "sk-listings"
TINY_WIDTH = 32


def write_embeddings(folder: Path) -> None:
    """One embedding per format: fitting the tiny model, SD 1.x, SDXL, A1111 .pt, a broken one."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"emb_params": torch.randn(2, TINY_WIDTH)}, str(folder / "tiny-style.safetensors"))
    save_file({"emb_params": torch.randn(3, 768)}, str(folder / "sd1-style.safetensors"))
    sdxl = {"clip_l": torch.randn(4, 768), "clip_g": torch.randn(4, 1280)}
    save_file(sdxl, str(folder / "sdxl-style.safetensors"))
    a1111_pt = {
        "string_to_token": {"*": 265},
        "string_to_param": {"*": torch.randn(5, TINY_WIDTH)},
        "name": "old-style",
        "step": 1200,
        "sd_checkpoint": "abc123",
        "sd_checkpoint_name": "tiny",
    }
    (folder / "sub").mkdir()
    torch.save(a1111_pt, str(folder / "sub" / "old-style.pt"))
    (folder / "broken.safetensors").write_bytes(b"not a safetensors file")
    (folder / "notes.txt").write_text("not an embedding", encoding="utf-8")


@pytest.fixture(scope="module")
def serve_spec(tiny_sd: Path) -> ServeSpec:
    def build(folder: Path) -> Path:
        tiny_models(tiny_sd)(folder)
        lora = build_tiny_lora(tiny_sd, folder / "loras" / "detail.safetensors")
        (lora.parent / "old.pt").write_bytes(b"\0")
        (lora.parent / "readme.md").write_text("not a LoRA", encoding="utf-8")
        write_embeddings(folder / "embeddings")
        return folder

    return ServeSpec(models=build, in_process=True, api_key=KEY)


def test_loras_lists_the_files_of_the_loras_folder(served: Served) -> None:
    response = served.get("/sdapi/v1/loras")
    assert response.status_code == 200
    items = {item["name"]: item for item in response.json()}
    assert set(items) == {"detail", "old"}
    detail = items["detail"]
    folder = served.engine.settings.models_path / "loras"
    assert detail["alias"] == "detail"
    assert detail["path"] == str((folder / "detail.safetensors").absolute())
    assert isinstance(detail["metadata"], dict) and detail["metadata"].get("format") == "pt"
    assert items["old"]["metadata"] == {}


def test_refresh_loras_sees_a_new_file(served: Served) -> None:
    folder = served.engine.settings.models_path / "loras"
    new = folder / "added.ckpt"
    new.write_bytes(b"\0")
    try:
        refreshed = served.post("/sdapi/v1/refresh-loras", {})
        assert refreshed.status_code == 200 and refreshed.json() is None
        assert "added" in {item["name"] for item in served.get("/sdapi/v1/loras").json()}
    finally:
        new.unlink()


def test_embeddings_are_loaded_when_they_fit_the_current_model(served: Served) -> None:
    response = served.get("/sdapi/v1/embeddings")
    assert response.status_code == 200
    body = response.json()
    assert set(body["loaded"]) == {"tiny-style", "old-style"}
    assert set(body["skipped"]) == {"sd1-style", "sdxl-style", "broken"}
    assert body["loaded"]["tiny-style"] == {
        "step": None,
        "sd_checkpoint": None,
        "sd_checkpoint_name": None,
        "shape": TINY_WIDTH,
        "vectors": 2,
    }
    assert body["loaded"]["old-style"] == {
        "step": 1200,
        "sd_checkpoint": "abc123",
        "sd_checkpoint_name": "tiny",
        "shape": TINY_WIDTH,
        "vectors": 5,
    }
    assert body["skipped"]["sd1-style"]["shape"] == 768
    assert body["skipped"]["sdxl-style"] == {
        "step": None,
        "sd_checkpoint": None,
        "sd_checkpoint_name": None,
        "shape": 768 + 1280,
        "vectors": 4,
    }
    assert body["skipped"]["broken"]["shape"] is None
    refreshed = served.post("/sdapi/v1/refresh-embeddings", {})
    assert refreshed.status_code == 200 and refreshed.json() is None


def test_the_listings_need_the_api_key(served: Served) -> None:
    assert served.http is not None
    for path, _handler, method in table():
        response = served.http.request(method, f"/sdapi/v1/{path}")
        assert response.status_code == 401, path


def test_the_listings_are_in_openapi(served: Served) -> None:
    paths = served.get("/openapi.json").json()["paths"]
    for path, _handler, method in table():
        assert method.lower() in paths[f"/sdapi/v1/{path}"], path


def write_checkpoint(path: Path, widths: dict[str, int]) -> None:
    """A single-file checkpoint holding only CLIP token embeddings of the given widths."""
    save_file({key: torch.zeros(10, width) for key, width in widths.items()}, str(path))


SD1_KEY = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
SD2_KEY = "cond_stage_model.model.token_embedding.weight"
SDXL_KEYS = {
    "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight": 768,
    "conditioner.embedders.1.model.token_embedding.weight": 1280,
}


@pytest.mark.parametrize(
    ("widths", "expected"),
    [({SD1_KEY: 768}, (768,)), ({SD2_KEY: 1024}, (1024,)), (SDXL_KEYS, (768, 1280))],
)
def test_a_checkpoints_text_widths_come_from_its_header(
    tmp_path: Path, widths: dict[str, int], expected: tuple[int, ...]
) -> None:
    from localimg.config import ModelConfig

    write_checkpoint(tmp_path / "model.safetensors", widths)
    data = {"name": "m", "parameters": {"model": "model.safetensors"}, "models_path": tmp_path}
    config = ModelConfig.model_validate(data)
    assert text_widths(config) == expected
    write_embeddings(tmp_path / "embeddings")
    fitting = {e.name for e in list_embeddings(tmp_path) if e.fits(expected)}
    assert fitting == {(768,): {"sd1-style"}, (1024,): set(), (768, 1280): {"sdxl-style"}}[expected]


def addnet_hash(path: Path) -> str:
    """A1111's LoRA hash, computed here independently: sha256 of the bytes after the header."""
    import hashlib

    data = path.read_bytes()
    return hashlib.sha256(data[8 + int.from_bytes(data[:8], "little") :]).hexdigest()[:12]


def test_a_lora_tag_puts_lora_hashes_in_the_parameters(served: Served) -> None:
    import base64
    import io
    import json

    from PIL import Image

    body = {"prompt": "an otter <lora:detail:0.5>", "steps": 2, "width": 64, "height": 64}
    response = served.post("/sdapi/v1/txt2img", body)
    assert response.status_code == 200, response.text
    expected = addnet_hash(served.engine.settings.models_path / "loras" / "detail.safetensors")
    (infotext,) = json.loads(response.json()["info"])["infotexts"]
    assert f'Lora hashes: "detail: {expected}"' in infotext
    image = Image.open(io.BytesIO(base64.b64decode(response.json()["images"][0])))
    assert image.info["parameters"] == infotext
    plain = served.post("/sdapi/v1/txt2img", {**body, "prompt": "an otter"})
    assert "Lora hashes" not in json.loads(plain.json()["info"])["infotexts"][0]


def test_lora_hashes_of_other_formats_metadata_and_missing_files(tmp_path: Path) -> None:
    import hashlib

    from localimg.prompts.lora_files import lora_hashes

    (tmp_path / "old.pt").write_bytes(b"pickled LoRA")
    save_file(
        {"x": torch.zeros(2)}, str(tmp_path / "named.safetensors"), {"sshs_model_hash": "f" * 64}
    )
    whole = hashlib.sha256(b"pickled LoRA").hexdigest()[:12]
    assert (
        lora_hashes("<lora:old:1> a <lora:named>", tmp_path) == f"old: {whole}, named: {'f' * 12}"
    )
    assert lora_hashes("<lora:missing:1>", tmp_path) is None  # the request's own check says why
    assert lora_hashes("no tags", tmp_path) is None
