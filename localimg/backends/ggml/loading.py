"""Loading a model into stable-diffusion.cpp: the files the YAML names, checked before the native
library sees them (it would crash or load half a model), its constructor keywords, and the model
family read from what it logs while loading.

The library is imported (native.install) only when a model loads, never at import.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localimg.backends.base import ProgressCallback
from localimg.backends.ggml import caching, call_args, file_families, native
from localimg.backends.ggml.families import Family, family_of, guidance_embed
from localimg.backends.ggml.lora import lora_dir
from localimg.backends.ggml.options import FILE_OPTIONS, GgmlOptions
from localimg.config import ModelConfig
from localimg.errors import ConfigError, ModelUnavailable
from localimg.prompts.embeddings import fitting_embeddings
from localimg.prompts.text_width import text_widths
from localimg.requests import ProgressEvent

log = logging.getLogger(__name__)


@dataclass
class Loaded:
    """A model stable-diffusion.cpp loaded, with what the backend keeps of its loading."""

    sd: Any  # the stable_diffusion_cpp module, patched by native.install
    model: Any
    traits: Family
    yaml_loras: list[tuple[Path, float]]  # the YAML's LoRA files (absolute) and scales


def check_device(device: str | None) -> None:
    """The library runs where it was built to run: only `auto` (or nothing) can be honoured."""
    if device in (None, "", "auto"):
        return
    raise ConfigError(
        f"device {device!r}: stable-diffusion.cpp runs on the backend it was built for "
        "(CPU, or CUDA/Metal/Vulkan through CMAKE_ARGS when installing); use --device auto"
    )


def existing_file(config: ModelConfig, key: str, value: str) -> str:
    """The absolute path of a file the YAML names under `key`; ModelUnavailable when absent."""
    path = config.resolve_path(value)
    if not path.is_file():
        raise ModelUnavailable(f"{config.where}: {key}: file {value!r} not found ({path})")
    return str(path)


def yaml_loras(config: ModelConfig) -> list[tuple[Path, float]]:
    """The YAML's LoRA files with their scales, each checked to exist."""
    found = []
    for file, scale in config.loras():
        path = config.resolve_path(file)
        if not path.is_file():
            raise ModelUnavailable(f"{config.where}: LoRA file {file!r} not found ({path})")
        found.append((path, scale))
    return found


def embedding_paths(config: ModelConfig) -> list[str]:
    """The files of the models dir's `embeddings/` that fit the model's text encoders (read from
    its files' headers); each other one is skipped with a log line."""
    fitting = fitting_embeddings(config.models_path, lambda: text_widths(config), config.name)
    return [str(embedding.path) for embedding in fitting]


def constructor_keywords(
    config: ModelConfig, options: GgmlOptions, threads: int, control_net: str | None = None
) -> dict[str, Any]:
    """The StableDiffusion constructor's keywords: the model and every *_path file, checked, and
    the ControlNet file (control.py) the context is built with, if any."""
    if not config.model:
        raise ConfigError(f"{config.where}: parameters.model is missing (a .gguf/.safetensors)")
    model_file = existing_file(config, "parameters.model", config.model)
    files = {
        key: existing_file(config, key, getattr(options, key))
        for key in FILE_OPTIONS
        if getattr(options, key)
    }
    folder = lora_dir(config, options)
    if options.lora_dir and not folder.is_dir():
        raise ModelUnavailable(f"{config.where}: lora_dir {str(folder)!r} is not a folder")
    return {
        ("diffusion_model_path" if options.diffusion_model else "model_path"): model_file,
        **files,
        "lora_model_dir": str(folder),
        **({"control_net_path": control_net} if control_net else {}),
        "n_threads": threads,
        "wtype": options.wtype or "default",
        "keep_clip_on_cpu": options.keep_clip_on_cpu,
        "keep_vae_on_cpu": options.keep_vae_on_cpu,
        "keep_control_net_on_cpu": options.keep_control_net_on_cpu,
        "diffusion_flash_attn": options.diffusion_flash_attn,
        "flash_attn": options.flash_attn,
        "offload_params_to_cpu": options.offload_params_to_cpu,
        # vae:full with a TAESD: the full VAE decodes and the TAESD only makes previews.
        "tae_preview_only": options.vae == "full" and bool(options.taesd_path),
        "verbose": True,  # never False: it redirects the whole process's stdout/stderr
        # textual inversions, used by file stem in prompts (native.leak_free_class makes the
        # binding accept them); left out when there are none
        **({"embedding_paths": paths} if (paths := embedding_paths(config)) else {}),
    }


def check_model_file(config: ModelConfig, model_file: str, options: GgmlOptions) -> None:
    """Refuse, from the file's header alone, a model the bundled library cannot load (it would
    load a newer family as an older one, or fail deep inside), and ERNIE-Image with a TAESD,
    which 0.4.7 builds with 16 latent channels for ERNIE-Image's 128 (a wrong-shape load error,
    or a process abort when decoding)."""
    path = Path(model_file)
    try:
        names = file_families.tensor_names(path)
    except (file_families.UnreadableHeader, OSError) as exc:
        raise ModelUnavailable(f"{config.where}: cannot load {model_file}: {exc}") from None
    found = file_families.unloadable_family(names)
    if found:
        family, name = found
        raise ModelUnavailable(
            f"{config.where}: {path.name} is a {family.label} model (it has the tensor "
            f"{name!r}), which the bundled stable-diffusion.cpp (stable-diffusion-cpp-python "
            f"0.4.7) cannot load; {family.advice()}"
        )
    if options.taesd_path and file_families.is_ernie_image(names):
        raise ConfigError(
            f"{config.where}: options: taesd_path: stable-diffusion.cpp 0.4.7 has no tiny "
            "autoencoder for ERNIE-Image (it builds one with 16 latent channels for ERNIE-Image's "
            "128 and fails or aborts); remove taesd_path (and vae) and decode with the FLUX.2 "
            "VAE of vae_path"
        )


def open_model(
    config: ModelConfig,
    options: GgmlOptions,
    threads: int,
    progress: ProgressCallback,
    control_net: str | None = None,
) -> Loaded:
    """Load the YAML's model in stable-diffusion.cpp (with `control_net`, a ControlNet file) and
    check the YAML against its family; a model that fails is closed before the error is raised
    (its native memory is freed)."""
    kwargs = constructor_keywords(config, options, threads, control_net)
    model_file = kwargs.get("diffusion_model_path") or kwargs["model_path"]
    loras = yaml_loras(config)
    check_model_file(config, model_file, options)
    if config.f16 and not options.wtype:
        log.warning(
            "%s: f16 does not change a ggml model (its weights keep the file's types); "
            "set options wtype:f16 to convert them on load",
            config.where,
        )
    sd = native.install()
    cls = native.leak_free_class(sd)
    progress(ProgressEvent("load", message=f"loading {Path(model_file).name}"))
    begin = time.monotonic()
    with native.NATIVE_LOCK, native.capturing() as lines:
        try:
            with native.stdout_to_stderr():
                model = cls(**kwargs)
        except (ValueError, OSError) as exc:
            raise ModelUnavailable(f"{config.where}: cannot load {model_file}: {exc}") from None
        finally:
            native.quiet_wrapper()
            native.reset_progress(sd)
        if not native.context_ok(model):
            native.discard_failed(model)
            errors = [text for level, text in lines if level >= 2]
            reason = errors[-1] if errors else "stable-diffusion.cpp could not load it"
            what = "a complete Stable Diffusion / FLUX model file"
            if control_net:
                model_file += f" with ControlNet {Path(control_net).name}"
                what += " and a ControlNet of its family"
            raise ModelUnavailable(
                f"{config.where}: cannot load {model_file} (is it {what}?): {reason}"
            )
    texts = [text for _, text in lines]
    version = next((t.split("Version:", 1)[1].strip() for t in texts if "Version:" in t), "")
    traits = family_of(version, texts, options.reference_edit, guidance_embed(texts))
    try:
        call_args.check_options(traits, options, config.where)
        caching.check_config_cache(config, traits)
    except ConfigError:
        native.close(model)
        raise
    log.info("loaded %s (%s) in %.2fs", model_file, traits.label, time.monotonic() - begin)
    return Loaded(sd, model, traits, loras)
