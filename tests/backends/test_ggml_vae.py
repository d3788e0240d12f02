"""Which autoencoder decodes on stable-diffusion.cpp: `vae:taesd`, `vae:full` and `taesd_path`.

The real library on the tiny SD1 UNet (tests/support/tiny_ggml.py) with a random full-size SD1 VAE
(tests/support/tiny_ggml_vae.py) and the random TAESD. What is checked:
- taesd_path alone keeps LocalAI's meaning (the TAESD decodes) and equals vae:taesd;
- vae:full with a taesd_path decodes with the VAE (the same pixels as without any TAESD) and
  the TAESD still makes the previews;
- the two decoders give different images of the same size;
- the combinations that would leave a file unused, and unknown values, are refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("stable_diffusion_cpp")

from localimg.backends.base import RuntimeSettings
from localimg.backends.ggml.options import parse_options
from localimg.config import config_from_dict
from localimg.engine import Engine, EngineSettings
from localimg.errors import ConfigError
from localimg.requests import ImageRequest, ProgressEvent
from tests.support.tiny_ggml import link_or_copy

pytestmark = pytest.mark.ggml

YAML = """\
name: {name}
backend: stablediffusion-ggml
parameters:
  model: sd1.safetensors
step: 2
cfg_scale: 1.0  # one UNet call per step: CFG is not what these tests test
size: 64x64
options:
- "sampler:euler"
"""
MODELS = {
    "full": ["vae_path:vae.safetensors"],
    "full-with-taesd": ["vae_path:vae.safetensors", "taesd_path:taesd.safetensors", "vae:full"],
    "taesd": ["taesd_path:taesd.safetensors"],
    "taesd-explicit": ["taesd_path:taesd.safetensors", "vae:taesd"],
}


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.fixture(scope="module")
def engine(
    tmp_path_factory: pytest.TempPathFactory, tiny_ggml: dict[str, Path]
) -> Iterator[Engine]:
    from tests.support.tiny_ggml_vae import sd1_vae_path

    folder = tmp_path_factory.mktemp("ggml-vae")
    link_or_copy(tiny_ggml["model"], folder / "sd1.safetensors")
    link_or_copy(tiny_ggml["taesd"], folder / "taesd.safetensors")
    link_or_copy(sd1_vae_path(), folder / "vae.safetensors")
    for name, options in MODELS.items():
        body = YAML.format(name=name) + "".join(f'- "{o}"\n' for o in options)
        (folder / f"{name}.yaml").write_text(body, encoding="utf-8")
    eng = Engine(EngineSettings(models_path=folder, runtime=RuntimeSettings()))
    yield eng
    eng.close()


def image(engine: Engine, model: str, **fields: object) -> np.ndarray:
    request = ImageRequest(**{"prompt": "a red fox", "seed": 3, **fields})  # type: ignore[arg-type]
    return pixels(engine.generate(model, request).images[0])


def test_taesd_decodes_with_taesd_path_alone_or_vae_taesd(engine: Engine) -> None:
    full = image(engine, "full")
    taesd = image(engine, "taesd")
    assert full.shape == taesd.shape == (64, 64, 3)
    assert np.abs(full - taesd).max() > 30  # another decoder, not rounding
    assert np.array_equal(image(engine, "taesd-explicit"), taesd)


def test_vae_full_decodes_with_the_vae_and_previews_with_the_taesd(engine: Engine) -> None:
    events: list[ProgressEvent] = []
    request = ImageRequest(prompt="a red fox", seed=3, previews=2)
    result = engine.generate("full-with-taesd", request, progress=events.append)
    assert np.array_equal(pixels(result.images[0]), image(engine, "full"))
    previews = [e.preview for e in events if e.preview is not None]
    assert len(previews) == 2 and all(p.size == (64, 64) for p in previews)
    # Every step previewed: made by the TAESD decoder ("tae"), which the VAE model keeps: the
    # last preview is the TAESD's decode of the final latents, not the VAE's image.
    last = pixels(previews[-1])
    assert np.array_equal(last, image(engine, "taesd"))
    assert np.abs(last - pixels(result.images[0])).max() > 30


def ggml_config(tmp_path: Path, options: list[str]) -> object:
    data = {
        "name": "g",
        "backend": "stablediffusion-ggml",
        "parameters": {"model": "m.gguf"},
        "options": options,
    }
    return config_from_dict(data, where="g.yaml", models_path=tmp_path)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (["vae:taesd"], "vae:taesd decodes with a tiny autoencoder: name its file with taesd_path"),
        (["vae:tiny", "taesd_path:t.safetensors"], "vae takes taesd (decode with the tiny"),
        (["vae_path:v.safetensors", "taesd_path:t.safetensors"], "say which one decodes, vae:full"),
        (
            ["vae_path:v.safetensors", "taesd_path:t.safetensors", "vae:taesd"],
            "never loads vae_path",
        ),
    ],
)
def test_vae_option_refusals(tmp_path: Path, options: list[str], words: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_options(ggml_config(tmp_path, options))  # type: ignore[arg-type]
    assert words in err.value.message


def test_vae_option_accepted_forms(tmp_path: Path) -> None:
    def vae(options: list[str]) -> str | None:
        return parse_options(ggml_config(tmp_path, options)).vae  # type: ignore[arg-type]

    assert vae(["vae:full"]) == "full"  # the default decoder, said explicitly
    assert vae(["vae:TAESD", "taesd_path:t.safetensors"]) == "taesd"
    assert vae(["taesd_path:t.safetensors"]) is None  # LocalAI's meaning: the TAESD decodes
