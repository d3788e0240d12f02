"""Loading a diffusers modular pipeline (Anima) from a folder or hub repo.

A modular repo is marked by `modular_model_index.json` (not `model_index.json`): its
`_class_name` names the ModularPipeline class, and each component entry says which class loads it
and from where (the repo itself, or another repo for shared parts such as a text encoder).
Loading is diffusers' own: `ModularPipeline.from_pretrained` reads the index and makes the blocks,
`load_components` loads every component, in the precision localimg decided. A component that fails
to load only earns a warning from diffusers and would fail the first call deep inside; here it is
refused at load, by name. The loaded pipeline is then wrapped in the call adapter
(pipeline/modular.py), so the rest of the backend drives it like any other pipeline.

torch, diffusers and huggingface_hub are imported only inside functions.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from localimg.config import ModelSource
from localimg.errors import ConfigError, ModelUnavailable

log = logging.getLogger(__name__)

INDEX = "modular_model_index.json"
# The modular pipeline classes localimg drives (each has a row in the family table).
MODULAR_CLASSES = frozenset({"AnimaModularPipeline"})


def modular_class(
    pipeline_type: str, source: ModelSource, revision: str | None, local_only: bool, auto: bool
) -> str | None:
    """The modular class to load: the one `pipeline_type` names, else (`auto`: the YAML leaves
    the class to the model) the one a folder's or repo's modular_model_index.json names; None
    for a classic pipeline."""
    if pipeline_type in MODULAR_CLASSES:
        return pipeline_type
    if not auto or source.kind == "file":
        return None
    index = _index(source, revision, local_only)
    name = str((index or {}).get("_class_name") or "")
    return name if name in MODULAR_CLASSES else None


def _index(source: ModelSource, revision: str | None, local_only: bool) -> dict[str, Any] | None:
    """modular_model_index.json of a folder, or of a hub repo that has no model_index.json in
    the cache (a classic repo costs no request here); None where there is none."""
    if source.kind == "folder":
        path: Path | None = source.path / INDEX
        if not path or not path.is_file():
            return None
    else:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache

        if isinstance(try_to_load_from_cache(source.location, "model_index.json"), str):
            return None
        try:
            path = Path(hf_hub_download(source.location, INDEX, revision=revision,
                                        local_files_only=local_only))  # fmt: skip
        except Exception as exc:  # no such file, or the hub unreachable: a classic repo then
            log.debug("%s: no %s (%s)", source.location, INDEX, exc)
            return None
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def load_modular(
    class_name: str, source: ModelSource, dtype: Any, common: dict[str, Any], options: Any
) -> Any:
    """The modular pipeline `class_name` from a folder or hub repo, every component loaded in
    `dtype`, wrapped in its call adapter."""
    import diffusers

    from localimg.backends.diffusers.pipeline import modular

    _refuse_options(class_name, source, options)
    install_cosmos_resize()
    pipeline_class = getattr(diffusers, class_name)
    where: dict[str, Any] = {k: common[k] for k in ("revision", "local_files_only") if k in common}
    pipe = pipeline_class.from_pretrained(source.location, **where)
    if type(pipe).__name__ != class_name:
        raise ConfigError(
            f"{source.location} is a {type(pipe).__name__}, not the {class_name} its YAML names"
        )
    loading: dict[str, Any] = {"dtype": dtype}
    if "local_files_only" in common:
        loading["local_files_only"] = True
    if options.variant:
        loading["variant"] = options.variant
    pipe.load_components(**loading)
    missing = [name for name in pipe.pretrained_component_names if getattr(pipe, name) is None]
    if missing:
        raise ModelUnavailable(
            f"cannot load {source.location}: its {', '.join(missing)} did not load (see "
            f"{INDEX} for where each comes from)"
        )
    return modular.wrap(pipe)


def _refuse_options(class_name: str, source: ModelSource, options: Any) -> None:
    """What the modular loading cannot honour is refused, never dropped."""
    if source.kind == "file":
        raise ConfigError(
            f"{class_name} loads from a diffusers modular folder or hub repo (one with {INDEX}), "
            f"not from the single file {source.location}"
        )
    if options.vae == "taesd":
        raise ConfigError(
            f"options: vae:taesd is not supported for {class_name}: its blocks decode (and "
            "encode) with the full VAE's own latent mean and std, which a tiny autoencoder has "
            "not; leave vae out"
        )
    if options.channels_last:
        raise ConfigError(
            f"options: channels_last is not supported for {class_name}: its VAE's convolutions "
            "are 3-D (video-style), which the 4-D channels_last layout cannot hold; leave it out"
        )
    for key in ("config", "original_config", "base_model"):  # single-file and FLUX.1 keys
        if getattr(options, key, None):
            raise ConfigError(
                f"options: {key} is not supported for {class_name} (a diffusers modular "
                "pipeline); leave it out"
            )


def install_cosmos_resize() -> None:
    """Without torchvision, the Cosmos transformer (Anima's DiT) fails at its first step: it
    resizes its padding mask with `torchvision.transforms`, imported only where torchvision is
    installed (PyPI's torchvision wheels are CUDA builds, so CPU setups often lack it). The one
    call it makes, a nearest-neighbour resize of a (B, 1, H, W) tensor, is torch's own
    `interpolate(mode="nearest")` (what torchvision runs for it), given here as that module's
    `transforms`; with torchvision installed nothing changes."""
    import importlib.util
    import types

    from diffusers.models.transformers import transformer_cosmos

    if importlib.util.find_spec("torchvision") is not None or hasattr(
        transformer_cosmos, "transforms"
    ):
        return

    def resize(tensor: Any, size: list[int], interpolation: Any = "nearest") -> Any:
        import torch

        return torch.nn.functional.interpolate(tensor, size=size, mode=str(interpolation))

    functional = types.SimpleNamespace(resize=resize)
    modes = types.SimpleNamespace(NEAREST="nearest")
    transformer_cosmos.transforms = types.SimpleNamespace(
        functional=functional, InterpolationMode=modes
    )
