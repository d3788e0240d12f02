"""Fast decoding: `options: ["vae:taesd"]` swaps the pipeline's VAE for a tiny autoencoder.

madebyollin's TAESD family (diffusers' `AutoencoderTiny`) decodes the same latents as a model's
own VAE with a few percent of its work, at some cost in fine detail. `taesd_path:` names the tiny
autoencoder (a local folder or a hub repo id); unset, the family's published one is used:
taesd (SD1/SD2), taesdxl (SDXL), taesd3 (SD3), taef1 (FLUX.1, Kontext, Chroma and Z-Image, which
share FLUX.1's VAE). FLUX.2's taef2 is not an `AutoencoderTiny` yet, and Qwen-Image and Wan have
video-shaped VAEs with no tiny counterpart in diffusers: those refuse `vae:taesd` unless
`taesd_path` names a compatible one. `vae:full` keeps the model's own VAE (the default).

The swap happens once at load, before placement, so every task pipeline derived later
(img2img, inpaint: tasks.py) shares the tiny decoder and encoder, and previews decode with it
(previews.py uses a pipeline's `AutoencoderTiny` when it has one).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from localimg.backends.diffusers.options import DiffusersOptions
from localimg.config import ModelConfig
from localimg.errors import ConfigError, ModelUnavailable

log = logging.getLogger(__name__)

# Pipeline class name prefixes → the published tiny autoencoder (None: none exists), first match.
PUBLISHED: tuple[tuple[str, str | None], ...] = (
    ("StableDiffusionXL", "madebyollin/taesdxl"),
    ("StableDiffusion3", "madebyollin/taesd3"),
    ("StableDiffusion", "madebyollin/taesd"),
    ("Flux2", None),
    ("Flux", "madebyollin/taef1"),
    ("Chroma", "madebyollin/taef1"),
    ("ZImage", "madebyollin/taef1"),
)
# Pipelines whose decode adds `vae.config.shift_factor` (taef1 / taesd3 store 0.0 in their config).
SHIFTED = ("StableDiffusion3", "Flux", "Chroma", "ZImage")


def published_for(pipeline_name: str) -> str | None:
    for prefix, repo in PUBLISHED:
        if pipeline_name.startswith(prefix):
            return repo
    return None


def where_from(options: DiffusersOptions, pipe: Any, config: ModelConfig) -> str:
    """The tiny autoencoder to load: taesd_path (a local path wins over a repo id) or the
    family's published one; refuses families without one."""
    name = type(pipe).__name__
    if options.taesd_path:
        local = config.resolve_path(options.taesd_path)
        return str(local) if local.exists() else options.taesd_path
    repo = published_for(name)
    if repo is None:
        with_one = ", ".join(sorted({p for p, r in PUBLISHED if r}))
        raise ConfigError(
            f"{config.where}: options: vae:taesd has no published tiny autoencoder for {name} "
            f"(there is one for pipelines {with_one}); set "
            '`options: ["taesd_path:/folder/or/owner-repo"]` to an AutoencoderTiny with the same '
            "latent space, or use vae:full"
        )
    return repo


def check_folder(path: Path) -> None:
    """A local folder must hold an AutoencoderTiny (a full VAE there would be a silent no-op)."""
    config = path / "config.json"
    if not config.is_file():
        raise ModelUnavailable(f"taesd_path {path} has no config.json (an AutoencoderTiny folder)")
    name = json.loads(config.read_text(encoding="utf-8")).get("_class_name")
    if name != "AutoencoderTiny":
        raise ConfigError(f"taesd_path {path} holds a {name}, not an AutoencoderTiny")


def latent_scale(tiny: Any) -> int:
    """How many pixels a latent cell decodes to: one upsampling between decoder blocks."""
    blocks = len(tiny.config.decoder_block_out_channels)
    return int(tiny.config.upsampling_scaling_factor) ** (blocks - 1)


def check_fits(tiny: Any, pipe: Any, where: str) -> None:
    """The tiny decoder must read the latents the pipeline makes: same channels, same scale."""
    full = getattr(pipe, "vae", None)
    channels = getattr(getattr(full, "config", None), "latent_channels", None)
    if channels is not None and tiny.config.latent_channels != channels:
        raise ConfigError(
            f"taesd_path {where} makes {tiny.config.latent_channels}-channel latents; this "
            f"model's VAE uses {channels}: pick the tiny autoencoder of this model family"
        )
    scale = int(getattr(pipe, "vae_scale_factor", 0) or 0)
    if scale and latent_scale(tiny) != scale:
        raise ConfigError(
            f"taesd_path {where} decodes {latent_scale(tiny)} pixels per latent; this model's "
            f"VAE decodes {scale}: pick the tiny autoencoder of this model family"
        )


def swap_in(pipe: Any, options: DiffusersOptions, config: ModelConfig, dtype: Any) -> str:
    """Replace the pipeline's VAE as `vae:` asks; returns the decoder in use ("full" or where
    the tiny one came from)."""
    if options.vae != "taesd":
        if options.taesd_path:
            raise ConfigError(
                f"{config.where}: options: taesd_path is set but vae:taesd is not; add "
                '"vae:taesd" or remove taesd_path'
            )
        return "full"
    if getattr(pipe, "vae", None) is None:
        raise ConfigError(f"{config.where}: options: vae:taesd needs a pipeline with a VAE")
    where = where_from(options, pipe, config)
    from diffusers import AutoencoderTiny

    from localimg.backends.diffusers.load.hub import hub_reachable
    from localimg.backends.diffusers.load.library import dtype_key

    local = Path(where).exists()
    if local:
        check_folder(Path(where))
    local_only = not local and not hub_reachable()
    try:
        tiny = AutoencoderTiny.from_pretrained(
            where, **{dtype_key(): dtype}, local_files_only=local_only
        )
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelUnavailable(
            f"{config.where}: cannot load the tiny autoencoder {where}: {first}"
        ) from None
    check_fits(tiny, pipe, where)
    name = type(pipe).__name__
    if name.startswith(SHIFTED) and getattr(tiny.config, "shift_factor", None) is None:
        tiny.register_to_config(shift_factor=0.0)  # its latents are the pipeline's, unshifted
    pipe.vae = tiny.eval()
    log.info("%s: decoding with the tiny autoencoder %s", config.where, where)
    return where
