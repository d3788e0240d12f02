"""The models bench_speedups.py measures accelerators on, and the YAML of each contender.

Two sets, both random weights (real compute, nothing downloaded):

- `tiny`: the test suite's tiny model of each family: diffusers' tiny SD pipeline
  (tests/support/tiny_models.py) and the text-to-image and text-to-video families of
  tests/support/tiny_families.py (as bench_families.py uses them); stable-diffusion.cpp's
  tiny-UNet SD1 checkpoint (tests/support/tiny_ggml.py) and tiny FLUX.2 klein
  (tests/support/tiny_ggml_families.py).
- `sd15`: bench/sd15.py's SD1.5-size pipeline on diffusers and the same weights as one checkpoint
  on stable-diffusion.cpp, each with a TAESD-shaped tiny autoencoder for `vae:taesd`.

A model here is a YAML base (backend, model file or folder, options); a contender's YAML is that
base plus the options of the method it measures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Families of tests/support/tiny_families.py measured by default: text to image and text to
# video (the edit families need input images, which the caches treat alike; `--models` can name
# them).
TINY_FAMILIES = (
    "ZImagePipeline",
    "Flux2KleinPipeline",
    "Flux2Pipeline",
    "ChromaPipeline",
    "QwenImagePipeline",
    "WanPipeline",
)
VIDEO_FRAMES = 5  # Wan takes 4k+1 frames
NO_FULL_VAE = "no full VAE of this family's latents here to compare with"


@dataclass(frozen=True)
class Model:
    """One model a method is measured on."""

    key: str  # what --models names
    label: str  # the table's model column
    engine: str  # diffusers | ggml
    path: str  # parameters.model
    options: tuple[str, ...] = ()
    frames: int = 0  # a video model: frames per generation
    taesd: str | None = None  # a tiny autoencoder for vae:taesd
    no_taesd: str = "no tiny autoencoder for this model here"
    # ggml: a full VAE for the plain side of the vae:taesd row, when the model file has none.
    full_vae: str | None = None
    # The GGUF row: (diffusers base folder, .gguf file of its transformer), or why not.
    gguf: tuple[str, str] | None = None
    no_gguf: str = "GGUF files hold DiT transformers, and the tiny one here is Qwen-Image's"


def yaml_text(name: str, model: Model, options: tuple[str, ...], path: str | None = None) -> str:
    backend = "diffusers" if model.engine == "diffusers" else "stablediffusion-ggml"
    lines = [f"name: {name}", f"backend: {backend}", "parameters:"]
    lines.append(f"  model: {path or model.path}")
    every = (*model.options, *options)
    if every:
        lines += ["options:", *(f'- "{option}"' for option in every)]
    return "\n".join(lines) + "\n"


def _work() -> Path:
    from tests.support.tiny_models import cache_dir

    folder = cache_dir() / "bench-speedups-v1"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _tiny_autoencoder(latent_channels: int, blocks: int, name: str) -> str | None:
    """A random AutoencoderTiny folder (tests/support/tiny_quant.py), None when that module is
    not there."""
    try:
        from tests.support.tiny_quant import tiny_autoencoder
    except ImportError:
        return None
    folder = _work() / name
    if not (folder / "config.json").is_file():
        tiny_autoencoder(folder, latent_channels=latent_channels, blocks=blocks)
    return str(folder)


def _qwen_gguf() -> tuple[str, str] | None:
    """The 64-wide tiny Qwen-Image folder and its transformer as a Q8_0 GGUF file."""
    try:
        from tests.support.tiny_quant import qwen_base, wide_qwen_transformer, write_gguf
    except ImportError:
        return None
    from tests.support.tiny_families import FAMILY_BUILDERS

    base, gguf = _work() / "qwen-image-wide", _work() / "qwen-image-wide-Q8_0.gguf"
    if not (base / "model_index.json").is_file():
        qwen_base(FAMILY_BUILDERS["QwenImagePipeline"](), base)
    if not gguf.is_file():
        write_gguf(wide_qwen_transformer(), gguf)
    return str(base), str(gguf)


def tiny_models(families: tuple[str, ...] = TINY_FAMILIES) -> list[Model]:
    from tests.support.tiny_families import FAMILY_BUILDERS
    from tests.support.tiny_ggml import tiny_checkpoint_path, tiny_taesd_path
    from tests.support.tiny_ggml_families import flux2_klein_files
    from tests.support.tiny_ggml_vae import sd1_vae_path
    from tests.support.tiny_models import tiny_sd_path

    taesd = _tiny_autoencoder(4, 2, "tiny-sd-taesd")
    models = [
        Model("sd", "SD (tiny)", "diffusers", str(tiny_sd_path()), taesd=taesd),
    ]
    for family in families:
        models.append(
            Model(
                family,
                f"{family.removesuffix('Pipeline')} (tiny)",
                "diffusers",
                str(FAMILY_BUILDERS[family]()),
                frames=VIDEO_FRAMES if family.startswith("Wan") else 0,
                no_taesd="no tiny autoencoder of this family's latents here",
                gguf=_qwen_gguf() if family == "QwenImagePipeline" else None,
            )
        )
    klein = flux2_klein_files()
    models += [
        Model(
            "sd1-ggml",
            "SD1 tiny UNet (ggml)",
            "ggml",
            str(tiny_checkpoint_path()),
            options=(f"taesd_path:{tiny_taesd_path()}", "sampler:euler"),
            taesd=str(tiny_taesd_path()),
            full_vae=str(sd1_vae_path()),  # SD1's VAE at its real size, random weights
            no_gguf="ggml files are quantized by wtype",
        ),
        Model(
            "klein-ggml",
            "FLUX.2 klein tiny (ggml)",
            "ggml",
            str(klein["diffusion_model"]),
            options=(
                "diffusion_model:true",
                f"llm_path:{klein['llm']}",
                f"taesd_path:{klein['taesd']}",
                "sampler:euler",
            ),
            no_taesd=NO_FULL_VAE,
            no_gguf="ggml files are quantized by wtype",
        ),
    ]
    return models


def _sd15_autoencoder() -> str:
    """A random AutoencoderTiny with TAESD's own shapes (diffusers' defaults) for sd15."""
    folder = _work() / "sd15-taesd"
    if not (folder / "config.json").is_file():
        import torch
        from diffusers import AutoencoderTiny

        torch.manual_seed(0)
        AutoencoderTiny().save_pretrained(str(folder))
    return str(folder)


def sd15_models() -> list[Model]:
    from sd15 import sd15_checkpoint, sd15_folder

    from tests.support.tiny_ggml import tiny_taesd_path

    return [
        Model(
            "sd15",
            "SD1.5 size",
            "diffusers",
            str(sd15_folder()),
            taesd=_sd15_autoencoder(),
        ),
        Model(
            "sd15-ggml",
            "SD1.5 size (ggml)",
            "ggml",
            str(sd15_checkpoint()),
            options=("sampler:euler",),
            taesd=str(tiny_taesd_path()),  # tests/support/tiny_ggml.py's TAESD has the real shapes
            no_gguf="ggml files are quantized by wtype",
        ),
    ]
