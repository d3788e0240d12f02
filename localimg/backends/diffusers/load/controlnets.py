"""The ControlNets a loaded model runs with: each loaded once, in the pipeline's dtype and on its
device, kept beside the model (keyed by its resolved path or repo id) and dropped with it.

A ControlNet is loaded as its family's class (families.CONTROLNETS): a diffusers folder or a hub
repo with `from_pretrained`, a single file with `from_single_file`. Before a pipeline is built
around it, its config is compared with the model's denoiser, so a ControlNet of another family
(or another size of the same family) is refused by name instead of failing in the first step.
torch and diffusers are imported only inside functions.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localimg._util.hub_errors import first_line
from localimg.backends.diffusers.families import CONTROL_FAMILIES, ControlFamily
from localimg.config.controlnets import CONTROLNET_SUFFIXES, is_diffusers_folder
from localimg.errors import InvalidRequest, ModelUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedNet:
    model: Any  # the diffusers ControlNet model
    name: str  # as the request named it (infotext, messages)
    location: str  # the resolved path or repo id: the cache key
    nbytes: int  # its own weights (not the modules it may share with the denoiser)


def declared_config(location: str) -> dict[str, Any]:
    """A diffusers folder's config.json ({}: a file, a repo id or an unreadable config)."""
    path = Path(location)
    if not is_diffusers_folder(path):
        return {}
    try:
        found = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def declared_class(location: str) -> str | None:
    """The model class a diffusers folder's config.json names (None: a file or a repo id)."""
    found = declared_config(location).get("_class_name")
    return str(found) if found else None


def model_class(location: str, family: ControlFamily, name: str) -> str:
    """The class to load `location` as: what its folder declares, which must be one of the
    family's; a single file or a repo id: the family's first."""
    declared = declared_class(location)
    if declared is None:
        return family.models[0]
    if declared not in family.models:
        raise InvalidRequest(
            f"ControlNet {name!r} is a {declared}, which does not fit a {family.name} model: "
            f"it needs a {' or '.join(family.models)} made for {family.name}",
            param="control_net",
        )
    return declared


def load_net(location: str, class_name: str, pipe: Any) -> Any:
    """Load one ControlNet in the pipeline's dtype, on its device (ModelUnavailable when its
    files cannot be had or read)."""
    import diffusers

    cls = getattr(diffusers, class_name)
    path = Path(location)
    try:
        if path.is_file():
            if path.suffix.lower() not in CONTROLNET_SUFFIXES:
                raise ValueError(f"not a weight file ({', '.join(CONTROLNET_SUFFIXES)})")
            model = single_file(cls, path, pipe)
        else:
            model = cls.from_pretrained(location, torch_dtype=pipe.dtype)
    except Exception as exc:
        hint = ""
        if path.is_file():
            hint = (
                f" ({class_name}.from_single_file reads the family's config from the hub once; "
                "a diffusers folder with its config.json loads offline)"
            )
        raise ModelUnavailable(
            f"cannot load ControlNet {location}: {first_line(exc)}{hint}"
        ) from None
    return model.to(pipe.device).eval()


def single_file(cls: Any, path: Path, pipe: Any) -> Any:
    """A single-file ControlNet: with the config diffusers looks up for it on the hub (cached
    after the first time); where that cannot be had (offline), an SD 1.x/2.x or SDXL ControlNet
    with the config its model's UNet implies, as ControlNetModel.from_unet makes it."""
    try:
        return cls.from_single_file(str(path), torch_dtype=pipe.dtype)
    except Exception:
        derived = unet_controlnet_config(cls, pipe)
        if derived is None:
            raise
    import tempfile

    with tempfile.TemporaryDirectory(prefix="localimg-controlnet-") as folder:
        (Path(folder) / "config.json").write_text(json.dumps(derived))
        log.info("ControlNet %s: no config from the hub; using its model's UNet's", path.name)
        return cls.from_single_file(str(path), config=folder, torch_dtype=pipe.dtype)


def unet_controlnet_config(cls: Any, pipe: Any) -> dict[str, Any] | None:
    """The ControlNetModel config a UNet implies: its down path and attention settings, four
    input channels (an inpainting UNet has nine), and a conditioning embedding that downsamples
    the control image as the VAE does (8x: three times, as every published one)."""
    import inspect
    import math

    unet = getattr(pipe, "unet", None)
    if cls.__name__ != "ControlNetModel" or unet is None:
        return None
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    config = {key: value for key, value in unet.config.items() if key in accepted}
    levels = int(math.log2(int(getattr(pipe, "vae_scale_factor", 8) or 8)))
    config.update(
        _class_name=cls.__name__,
        in_channels=4,
        conditioning_embedding_out_channels=[16, 32, 96, 256][: levels + 1],
    )
    return config


def own_bytes(model: Any) -> int:
    """The bytes of a module's parameters and buffers."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def check_fits(mine: Any, family: ControlFamily, denoiser: Any, name: str) -> None:
    """Refuse a ControlNet whose config (`mine`) disagrees with the denoiser's on a key the
    family's ControlNets share with it (cross_attention_dim, the attention sizes...)."""
    theirs = getattr(denoiser, "config", {})
    for key in family.matches:
        if key not in theirs or key not in mine:
            continue
        want, got = theirs[key], mine[key]
        if want != got:
            raise InvalidRequest(
                f"ControlNet {name!r} does not fit this {family.name} model: its {key} is "
                f"{got}, the model's is {want}. Use a ControlNet made for this model's family "
                f"and size (ControlNet works with {CONTROL_FAMILIES})",
                param="control_net",
            )


class ControlNets:
    """The ControlNets loaded for one model, by location; dropped with it."""

    def __init__(self) -> None:
        self.nets: dict[str, LoadedNet] = {}

    def get(
        self, name: str, location: str, family: ControlFamily, pipe: Any, denoiser: Any
    ) -> LoadedNet:
        """The ControlNet at `location`, loaded on first use, checked against the model."""
        found = self.nets.get(location)
        if found is None:
            class_name = model_class(location, family, name)
            check_fits(declared_config(location), family, denoiser, name)  # before loading
            model = load_net(location, class_name, pipe)
            found = LoadedNet(model, name, location, own_bytes(model))
            log.info("loaded ControlNet %s (%s, %d MB)", name, class_name, found.nbytes >> 20)
        if type(found.model).__name__ not in family.models:
            raise InvalidRequest(
                f"ControlNet {name!r} is a {type(found.model).__name__}, which does not fit a "
                f"{family.name} model: it needs a {' or '.join(family.models)}",
                param="control_net",
            )
        check_fits(found.model.config, family, denoiser, name)
        self.nets[location] = found
        return found

    @property
    def nbytes(self) -> int:
        return sum(net.nbytes for net in self.nets.values())

    def describe(self) -> str:
        """`name (N MB)` per loaded ControlNet, for the backend's describe()."""
        return ", ".join(f"{n.name} ({n.nbytes >> 20} MB)" for n in self.nets.values())

    def clear(self) -> None:
        self.nets = {}
