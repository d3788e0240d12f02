"""`vae:taesd` on the diffusers backend: the tiny autoencoder replaces the VAE (output differs,
size kept, previews decode with it, img2img encodes with it), and what cannot work is refused;
and `f16: true` on a CPU with native bfloat16 across the model families."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from localimg.backends.base import RuntimeSettings
from localimg.backends.diffusers.backend import DiffusersBackend
from localimg.backends.diffusers.decode.tiny_vae import published_for
from localimg.config import config_from_dict
from localimg.engine import Engine, EngineSettings, InProcessSlot
from localimg.errors import ConfigError
from localimg.requests import ImageRequest, ImageResult, ProgressEvent
from tests.support.server_support import write_model
from tests.support.tiny_families import TinyFamily
from tests.support.tiny_quant import tiny_autoencoder

REQUEST = ImageRequest(prompt="a windmill", seed=5, steps=3)


def arr(result: ImageResult) -> np.ndarray:
    return np.asarray(result.images[0].convert("RGB"), dtype=np.int16)


def backend_of(engine: Engine, name: str) -> Any:
    slot = engine.slots[name]
    assert isinstance(slot, InProcessSlot) and slot.backend is not None
    return slot.backend


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tiny_sd: Path) -> Path:
    folder = tmp_path_factory.mktemp("taesd-models")
    tiny_autoencoder(folder / "taesd-tiny")
    tiny_autoencoder(folder / "taesd-16ch", latent_channels=16)
    tiny_autoencoder(folder / "taesd-x8", blocks=4)
    write_model(folder, "plain", tiny_sd)
    write_model(folder, "full", tiny_sd, "options:\n- vae:full\n")
    write_model(folder, "taesd", tiny_sd, "options:\n- vae:taesd\n- taesd_path:taesd-tiny\n")
    return folder


@pytest.fixture(scope="module")
def engine(models: Path) -> Iterator[Engine]:
    engine = Engine(EngineSettings(models_path=models, keep_alive=None, max_loaded_models=2))
    yield engine
    engine.close()


def test_the_tiny_decoder_replaces_the_vae(engine: Engine) -> None:
    plain = engine.generate("plain", REQUEST)
    full = engine.generate("full", REQUEST)
    tiny = engine.generate("taesd", REQUEST)
    assert np.array_equal(arr(plain), arr(full))  # vae:full is the default, exactly
    backend = backend_of(engine, "taesd")
    assert type(backend.pipe.vae).__name__ == "AutoencoderTiny"
    assert backend.describe()["vae"].startswith("taesd (")
    assert backend_of(engine, "full").describe()["vae"] == "full"
    assert tiny.images[0].size == plain.images[0].size == (64, 64)
    assert not np.array_equal(arr(tiny), arr(plain))


def test_previews_decode_with_the_tiny_autoencoder(engine: Engine) -> None:
    events: list[ProgressEvent] = []
    request = ImageRequest(prompt="a windmill", seed=5, steps=4, previews=2)
    job = engine.submit("taesd", request, progress=events.append)
    final = job.result(timeout=300)
    shown = [e.preview for e in events if e.preview is not None]
    assert len(shown) == 2 and all(p.mode == "RGB" for p in shown)
    assert np.asarray(shown[-1]).std() > 0
    assert final.images[0].size == (64, 64)
    maker_vae = backend_of(engine, "taesd").pipe.vae
    assert type(maker_vae).__name__ == "AutoencoderTiny"


def test_img2img_encodes_with_the_tiny_autoencoder(engine: Engine) -> None:
    image = Image.new("RGB", (64, 64), "red")
    request = ImageRequest(prompt="a windmill", seed=5, steps=4, init_image=image, strength=0.5)
    tiny = engine.generate("taesd", request)
    full = engine.generate("full", request)
    assert tiny.images[0].size == (64, 64)
    assert not np.array_equal(arr(tiny), arr(full))


def _load(models: Path, model: str, options: list[str]) -> None:
    config = config_from_dict(
        {"name": "m", "backend": "diffusers", "parameters": {"model": model}, "options": options},
        where="m.yaml",
        models_path=models,
    )
    DiffusersBackend(RuntimeSettings(device="cpu")).load(config, lambda _event: None)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (["vae:taesd", "taesd_path:taesd-16ch"], "16-channel latents; this model's VAE uses 4"),
        (["vae:taesd", "taesd_path:taesd-x8"], "decodes 8 pixels per latent"),
        (["taesd_path:taesd-tiny"], "vae:taesd is not"),
        (["vae:tiny"], "taesd"),
    ],
)
def test_tiny_decoder_refusals(models: Path, tiny_sd: Path, options: list[str], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        _load(models, str(tiny_sd), options)


def test_a_folder_without_a_tiny_autoencoder_is_refused(models: Path, tiny_sd: Path) -> None:
    with pytest.raises(ConfigError, match="not an AutoencoderTiny"):
        _load(models, str(tiny_sd), ["vae:taesd", f"taesd_path:{tiny_sd / 'vae'}"])


def test_families_without_a_published_tiny_autoencoder_are_refused(
    models: Path, tiny_family: TinyFamily
) -> None:
    with pytest.raises(ConfigError, match="no published tiny autoencoder for QwenImagePipeline"):
        _load(models, str(tiny_family("qwen_image")), ["vae:taesd"])


def test_the_published_tiny_autoencoders() -> None:
    assert published_for("StableDiffusionPipeline") == "madebyollin/taesd"
    assert published_for("StableDiffusionImg2ImgPipeline") == "madebyollin/taesd"
    assert published_for("StableDiffusionXLPipeline") == "madebyollin/taesdxl"
    assert published_for("StableDiffusion3Pipeline") == "madebyollin/taesd3"
    assert published_for("FluxPipeline") == "madebyollin/taef1"
    assert published_for("FluxKontextPipeline") == "madebyollin/taef1"
    assert published_for("ChromaPipeline") == "madebyollin/taef1"
    assert published_for("ZImagePipeline") == "madebyollin/taef1"
    for none in ("Flux2Pipeline", "Flux2KleinPipeline", "QwenImagePipeline", "WanPipeline"):
        assert published_for(none) is None


# --- bfloat16 on a CPU with native support, every family ------------------------------------

FAMILIES = [
    "tiny_sd",
    "tiny_z_image",
    "tiny_flux2_klein",
    "tiny_chroma",
    "tiny_flux_kontext",
    "tiny_qwen_image",
    "tiny_wan",
]


@pytest.mark.parametrize("fixture", FAMILIES)
def test_f16_is_bfloat16_for_every_family_on_a_bf16_cpu(
    fixture: str,
    tiny_family: TinyFamily,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`f16: true` loads every family in bfloat16 on such a CPU, and the picture stays a picture
    close to float32's (random weights: closeness is loose, the families' scales differ)."""
    import torch

    monkeypatch.setenv("LOCALIMG_CPU_BF16", "1")
    folder = tiny_family(fixture.removeprefix("tiny_"))
    for name, f16 in (("f32", "false"), ("bf16", "true")):
        (tmp_path / f"{name}.yaml").write_text(
            f"name: {name}\nbackend: diffusers\nparameters:\n  model: {folder}\n"
            f"step: 2\nf16: {f16}\n",
            encoding="utf-8",
        )
    side = 64 if fixture in ("tiny_sd", "tiny_flux_kontext", "tiny_qwen_image") else 32
    fields: dict[str, Any] = {"seed": 5, "width": side, "height": side}
    if fixture == "tiny_wan":
        fields["num_frames"] = 5
    engine = Engine(EngineSettings(models_path=tmp_path, keep_alive=None, max_loaded_models=2))
    try:
        images = {}
        for name in ("f32", "bf16"):
            result = engine.generate(name, ImageRequest("a windmill", **fields))
            images[name] = arr(result)
        backend = backend_of(engine, "bf16")
        assert backend.describe()["dtype"] == "bfloat16"
        denoiser = getattr(backend.pipe, "unet", None) or backend.pipe.transformer
        assert denoiser.dtype == torch.bfloat16
        assert backend_of(engine, "f32").describe()["dtype"] == "float32"
    finally:
        engine.close()
    assert images["bf16"].shape == images["f32"].shape
    assert images["bf16"].std() > 0
    assert np.abs(images["bf16"] - images["f32"]).mean() < 40
