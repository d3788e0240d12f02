"""The 2026 families on the stable-diffusion.cpp engine (binding 0.4.7).

ERNIE-Image and Anima run for real on small random checkpoints (tests/support/
tiny_ggml_families_2026.py says what 0.4.7 fixes and why they are the size they are), compared
with the bare library call. Z-Image (base and Turbo) cannot be written small for 0.4.7 (30
layers at 3840, fixed) and Qwen-Image-2512 is Qwen-Image's network (test_ggml_families.py runs
it): their rules are tested from the version names the library logs. The families the bundled
library cannot load are refused from the file's tensor names before the library sees the file.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("stable_diffusion_cpp")

from localimg.backends.base import RuntimeSettings
from localimg.backends.ggml import native
from localimg.backends.ggml.backend import GgmlBackend
from localimg.backends.ggml.families import family_of
from localimg.config import load_config_file
from localimg.engine import Engine, EngineSettings
from localimg.errors import ConfigError, InvalidRequest, ModelUnavailable
from localimg.requests import ImageRequest, ImageResult
from tests.support.ggml_writer import GGML_F32, GgufFile, save_safetensors
from tests.support.tiny_ggml import link_or_copy
from tests.support.tiny_ggml_families_2026 import ernie_image_files

pytestmark = pytest.mark.ggml

ERNIE_YAML = """\
name: {name}
backend: stablediffusion-ggml
parameters:
  model: ernie-image.gguf
step: 2
size: 64x64
options:
- "diffusion_model:true"
- "llm_path:ministral-3-3b.safetensors"
- "vae_path:flux2-vae.safetensors"
- "sampler:euler"
- "threads:2"
"""


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def write_ernie(folder: Path, name: str, options: tuple[str, ...] = ()) -> None:
    body = ERNIE_YAML.format(name=name) + "".join(f'- "{o}"\n' for o in options)
    (folder / f"{name}.yaml").write_text(body, encoding="utf-8")


@pytest.fixture(scope="module")
def ernie_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    files = ernie_image_files()
    folder = tmp_path_factory.mktemp("ernie-models")
    link_or_copy(files["diffusion_model"], folder / "ernie-image.gguf")
    link_or_copy(files["llm"], folder / "ministral-3-3b.safetensors")
    link_or_copy(files["vae"], folder / "flux2-vae.safetensors")
    # any file will do: the refusal comes before stable-diffusion.cpp reads it
    link_or_copy(files["llm"], folder / "taef2.safetensors")
    write_ernie(folder, "ernie")
    write_ernie(folder, "ernie-taesd", ("taesd_path:taef2.safetensors", "vae:full"))
    write_ernie(folder, "ernie-enhance", ("prompt_enhance:true",))
    write_ernie(folder, "ernie-no-enhance", ("use_pe:false",))
    return folder


@pytest.fixture(scope="module")
def engine(ernie_dir: Path) -> Iterator[Engine]:
    eng = Engine(EngineSettings(models_path=ernie_dir))
    yield eng
    eng.close()


def run(engine: Engine, model: str = "ernie", **fields: Any) -> ImageResult:
    return engine.generate(model, ImageRequest(**{"prompt": "a red fox", **fields}))


def bare_call(folder: Path, **kwargs: Any) -> np.ndarray:
    """The same image straight from the binding, with the keywords the backend passes."""
    import stable_diffusion_cpp as sd

    model = native.leak_free_class(sd)(
        diffusion_model_path=str(folder / "ernie-image.gguf"),
        llm_path=str(folder / "ministral-3-3b.safetensors"),
        vae_path=str(folder / "flux2-vae.safetensors"),
        n_threads=2,
        verbose=True,
    )
    try:
        native.quiet_wrapper()
        call = {
            "negative_prompt": "",
            "clip_skip": -1,
            "sample_method": "euler",
            "scheduler": "default",
            "vae_tiling": False,
            "eta": math.inf,
            "batch_count": 1,
            **kwargs,
        }
        return pixels(model.generate_image(**call)[0])
    finally:
        native.close(model)


def test_ernie_image_is_recognised_with_its_defaults(ernie_dir: Path) -> None:
    backend = GgmlBackend(RuntimeSettings())
    backend.load(load_config_file(ernie_dir / "ernie.yaml"), lambda e: None)
    try:
        assert backend.family == "Ernie Image" and backend.traits.label == "ERNIE-Image"
        defaults = backend.defaults
        assert (defaults.width, defaults.height, defaults.cfg_scale) == (1024, 1024, 4.0)
        assert defaults.size_multiple == 16  # the FLUX.2 VAE: 8x and 2x2 latent patches
        assert backend.traits.references == 0 and not backend.traits.video
        assert not backend.traits.guidance
    finally:
        backend.unload()


def test_ernie_txt2img_is_the_bare_library_call(engine: Engine, ernie_dir: Path) -> None:
    first = run(engine, seed=7, cfg_scale=4.0, steps=1)
    other_prompt = run(engine, seed=7, cfg_scale=4.0, steps=1, prompt="a blue whale")
    negative = run(engine, seed=7, cfg_scale=4.0, steps=1, negative_prompt="blurry")
    image = first.images[0]
    assert image.mode == "RGB" and image.size == (64, 64)
    assert 30 < pixels(image).mean() < 225
    for other in (other_prompt, negative):
        assert not np.array_equal(pixels(image), pixels(other.images[0]))
    # the same keywords and seed through a second, bare load: the same pixels
    bare = bare_call(
        ernie_dir, prompt="a red fox", width=64, height=64, cfg_scale=4.0, sample_steps=1, seed=7
    )
    assert np.array_equal(pixels(image), bare)


def test_ernie_sizes_are_multiples_of_16(engine: Engine) -> None:
    with pytest.raises(InvalidRequest, match=r"ERNIE-Image model takes sides that are multiples"):
        run(engine, width=72, height=64)
    assert run(engine, seed=1, width=80, height=48).images[0].size == (80, 48)


def test_an_image_on_ernie_is_img2img_and_references_guidance_are_refused(
    engine: Engine,
) -> None:
    red = Image.new("RGB", (64, 64), (220, 30, 30))
    plain = run(engine, seed=3, steps=2)
    light = run(engine, seed=3, steps=2, init_image=red, strength=0.3)
    heavy = run(engine, seed=3, steps=2, init_image=red, strength=0.9)
    assert light.images[0].size == (64, 64)
    assert not np.array_equal(pixels(light.images[0]), pixels(plain.images[0]))
    assert not np.array_equal(pixels(light.images[0]), pixels(heavy.images[0]))
    with pytest.raises(InvalidRequest, match="ERNIE-Image takes no reference images"):
        run(engine, init_image=red, mode="edit")
    with pytest.raises(InvalidRequest, match="ERNIE-Image has none"):
        run(engine, extra={"guidance": 3.5})


def test_ernie_with_a_tiny_autoencoder_is_refused_before_loading(
    ernie_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 0.4.7 builds a 16-channel TAESD for ERNIE-Image's 128 latent channels: a wrong-shape
    # load failure, or an abort of the whole process when a 16-channel file decodes.
    monkeypatch.setattr(native, "install", _library_must_not_load)
    backend = GgmlBackend(RuntimeSettings())
    with pytest.raises(ConfigError, match=r"taesd_path: .* no tiny autoencoder for ERNIE-Image"):
        backend.load(load_config_file(ernie_dir / "ernie-taesd.yaml"), lambda e: None)


def test_the_prompt_enhancer_is_refused_and_off_is_accepted(ernie_dir: Path) -> None:
    backend = GgmlBackend(RuntimeSettings())
    with pytest.raises(ConfigError, match=r"prompt_enhance: stable-diffusion.cpp has no prompt"):
        backend.load(load_config_file(ernie_dir / "ernie-enhance.yaml"), lambda e: None)
    backend.load(load_config_file(ernie_dir / "ernie-no-enhance.yaml"), lambda e: None)
    try:
        assert backend.family == "Ernie Image"
    finally:
        backend.unload()


# -- Anima (one block at its fixed width) ---------------------------------------------------------

ANIMA_YAML = """\
name: anima
backend: stablediffusion-ggml
parameters:
  model: anima.gguf
step: 1
size: 64x64
options:
- "diffusion_model:true"
- "llm_path:qwen_3_06b_base.gguf"
- "taesd_path:taew2_1.safetensors"
- "sampler:euler"
- "threads:2"
"""


@pytest.fixture(scope="module")
def anima_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.tiny_ggml_families_2026 import anima_files

    files = anima_files()
    folder = tmp_path_factory.mktemp("anima-models")
    link_or_copy(files["diffusion_model"], folder / "anima.gguf")
    link_or_copy(files["llm"], folder / "qwen_3_06b_base.gguf")
    link_or_copy(files["taesd"], folder / "taew2_1.safetensors")
    (folder / "anima.yaml").write_text(ANIMA_YAML, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def anima(anima_dir: Path) -> Iterator[Engine]:
    eng = Engine(EngineSettings(models_path=anima_dir))
    yield eng
    eng.close()


def test_anima_is_recognised_and_matches_the_bare_library_call(
    anima: Engine, anima_dir: Path
) -> None:
    import stable_diffusion_cpp as sd

    result = run(anima, "anima", seed=5, cfg_scale=4.0)
    image = result.images[0]
    assert image.size == (64, 64) and result.request is not None
    assert run(anima, "anima", seed=5).request.cfg_scale == 4.0  # type: ignore[union-attr]
    other_prompt = run(anima, "anima", seed=5, cfg_scale=1.0, prompt="a blue whale")
    assert not np.array_equal(pixels(image), pixels(other_prompt.images[0]))
    model = native.leak_free_class(sd)(
        diffusion_model_path=str(anima_dir / "anima.gguf"),
        llm_path=str(anima_dir / "qwen_3_06b_base.gguf"),
        taesd_path=str(anima_dir / "taew2_1.safetensors"),
        n_threads=2,
        verbose=True,
    )
    try:
        native.quiet_wrapper()
        bare = model.generate_image(
            prompt="a red fox",
            negative_prompt="",
            clip_skip=-1,
            width=64,
            height=64,
            cfg_scale=4.0,
            sample_method="euler",
            scheduler="default",
            sample_steps=1,
            seed=5,
            eta=math.inf,
            vae_tiling=False,
            batch_count=1,
        )
    finally:
        native.close(model)
    assert np.array_equal(pixels(image), pixels(bare[0]))


def test_anima_rules(anima: Engine) -> None:
    with pytest.raises(InvalidRequest, match=r"width 68 is not a multiple of 8 .*Anima"):
        run(anima, "anima", width=68, height=64)
    red = Image.new("RGB", (64, 64), (220, 30, 30))
    with pytest.raises(InvalidRequest, match="Anima with taesd_path cannot take an input image"):
        run(anima, "anima", init_image=red, strength=0.5)
    with pytest.raises(InvalidRequest, match="Anima takes no reference images"):
        run(anima, "anima", init_image=red, mode="edit")


# -- families known by their version names (too large to load here) ------------------------------


@pytest.mark.parametrize(
    ("version", "label", "multiple", "cfg"),
    [
        ("Z-Image", "Z-Image", 8, 1.0),  # Turbo and base: one network, the base YAML sets cfg
        ("Anima", "Anima", 8, 4.0),
        ("Qwen Image", "Qwen-Image", 8, 2.5),  # Qwen-Image-2512 is this network
        ("Ernie Image", "ERNIE-Image", 16, 4.0),
    ],
)
def test_version_names_give_each_family_its_rules(
    version: str, label: str, multiple: int, cfg: float
) -> None:
    family = family_of(version, [f"Version: {version}"])
    assert (family.label, family.size_multiple, family.side, family.cfg_scale) == (
        label,
        multiple,
        1024,
        cfg,
    )
    assert family.references == 0 and not family.video and not family.guidance
    assert not family.unet


# -- families the bundled library cannot load ------------------------------------------------------

UNLOADABLE: dict[str, tuple[list[str], str]] = {
    # name → (tensor names of its file, what the refusal must name)
    "krea-2": (["model.diffusion_model.txtfusion.projector.weight"], r"Krea 2 .*'krea-2'"),
    "ideogram-4": (
        ["embed_image_indicator.weight", "layers.0.attention_norm1.weight"],
        r"'ideogram-4'",
    ),
    "qwen-image-layered": (
        [
            "transformer_blocks.0.img_mod.1.weight",
            "time_text_embed.addition_t_embedding.weight",
        ],
        r"Qwen-Image-Layered .*'qwen-image-layered'",
    ),
    "qwen-image-2": (
        ["txt_in.text_norm.weight", "img_in.weight"],
        r"Qwen-Image 2 .*'qwen-image-2'",
    ),
    "z-image-omni": (
        [
            "model.diffusion_model.cap_embedder.0.weight",
            "model.diffusion_model.siglip_embedder.0.weight",
        ],
        r"Z-Image-Omni .*ZImageOmniPipeline",
    ),
    "ltx-2": (["model.diffusion_model.audio_patchify_proj.weight"], r"LTX-2 .*'ltx-2'"),
}


def _library_must_not_load() -> Any:
    raise AssertionError("stable-diffusion.cpp was loaded")


def _write_marker_file(path: Path, names: list[str]) -> None:
    if path.suffix == ".gguf":
        file = GgufFile()
        for name in names:
            file.add(name, (4,), GGML_F32, np.zeros(4, np.float32).tobytes())
        file.write(path)
    else:
        save_safetensors({name: np.zeros(4, np.float16) for name in names}, path)


@pytest.mark.parametrize("suffix", [".safetensors", ".gguf"])
@pytest.mark.parametrize("family", sorted(UNLOADABLE))
def test_an_unloadable_family_is_refused_before_the_library_sees_it(
    family: str, suffix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names, message = UNLOADABLE[family]
    _write_marker_file(tmp_path / f"{family}{suffix}", names)
    (tmp_path / f"{family}.yaml").write_text(
        f"name: {family}\nbackend: stablediffusion-ggml\nparameters:\n  model: {family}{suffix}\n"
        'options:\n- "diffusion_model:true"\n',
        encoding="utf-8",
    )
    monkeypatch.setattr(native, "install", _library_must_not_load)
    backend = GgmlBackend(RuntimeSettings())
    with pytest.raises(ModelUnavailable, match=message) as caught:
        backend.load(load_config_file(tmp_path / f"{family}.yaml"), lambda e: None)
    assert "cannot load" in caught.value.message and "diffusers backend" in caught.value.message


def test_the_header_reader_skips_gguf_metadata(tmp_path: Path) -> None:
    import gguf

    from localimg.backends.ggml.file_families import UnreadableHeader, tensor_names

    path = tmp_path / "meta.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_string("general.name", "krea")
    writer.add_uint32("krea.blocks", 3)
    writer.add_array("tokenizer.tokens", ["a", "bc", "def"])
    writer.add_array("tokenizer.scores", [0.5, 1.5])
    writer.add_bool("krea.flag", True)
    writer.add_tensor("txtfusion.projector.weight", np.zeros((4, 32), np.float32))
    writer.add_tensor("blocks.0.mod.lin.weight", np.zeros(32, np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert tensor_names(path) == ["txtfusion.projector.weight", "blocks.0.mod.lin.weight"]
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(UnreadableHeader, match="ends early"):
        tensor_names(path)


def test_the_format_is_read_from_the_first_bytes_not_the_name(tmp_path: Path) -> None:
    """stable-diffusion.cpp loads a safetensors file named `.gguf`: so does the check."""
    import torch
    from safetensors.torch import save_file

    from localimg.backends.ggml import file_families

    named_gguf = tmp_path / "model-Q4_0.gguf"
    save_file({"double_blocks.0.img_attn.qkv.weight": torch.zeros(2)}, str(named_gguf))
    assert file_families.tensor_names(named_gguf) == ["double_blocks.0.img_attn.qkv.weight"]
    neither = tmp_path / "broken.gguf"
    neither.write_bytes(b"not a model at all")
    with pytest.raises(file_families.UnreadableHeader, match="neither a GGUF nor a safetensors"):
        file_families.tensor_names(neither)
    (tmp_path / "old.ckpt").write_bytes(b"PK\x03\x04")
    assert file_families.tensor_names(tmp_path / "old.ckpt") == []  # left to the library
