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


def declared_class(location: str) -> str | None:
    """The model class a diffusers folder's config.json names (None: a file or a repo id)."""
    path = Path(location)
    if not is_diffusers_folder(path):
        return None
    try:
        found = json.loads((path / "config.json").read_text()).get("_class_name")
    except (OSError, ValueError):
        return None
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


def load_net(location: str, class_name: str, dtype: Any, device: str) -> Any:
    """Load one ControlNet (ModelUnavailable when its files cannot be had or read)."""
    import diffusers

    cls = getattr(diffusers, class_name)
    path = Path(location)
    try:
        if path.is_file():
            if path.suffix.lower() not in CONTROLNET_SUFFIXES:
                raise ValueError(f"not a weight file ({', '.join(CONTROLNET_SUFFIXES)})")
            model = cls.from_single_file(str(path), torch_dtype=dtype)
        else:
            model = cls.from_pretrained(location, torch_dtype=dtype)
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
    return model.to(device).eval()


def own_bytes(model: Any) -> int:
    """The bytes of a module's parameters and buffers."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def check_fits(net: Any, family: ControlFamily, denoiser: Any, name: str) -> None:
    """Refuse a ControlNet whose config disagrees with the denoiser's on a key the family's
    ControlNets share with it (cross_attention_dim, the attention sizes...)."""
    theirs = getattr(denoiser, "config", {})
    mine = net.config
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
            model = load_net(location, class_name, pipe.dtype, str(pipe.device))
            found = LoadedNet(model, name, location, own_bytes(model))
            log.info("loaded ControlNet %s (%s, %d MB)", name, class_name, found.nbytes >> 20)
        if type(found.model).__name__ not in family.models:
            raise InvalidRequest(
                f"ControlNet {name!r} is a {type(found.model).__name__}, which does not fit a "
                f"{family.name} model: it needs a {' or '.join(family.models)}",
                param="control_net",
            )
        check_fits(found.model, family, denoiser, name)
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
