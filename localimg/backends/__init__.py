"""Backend registry: a backend name (or alias) → its class, loaded only when first needed.

Built-in backends are named here; third-party packages add theirs through the entry point group
`localimg.backends` (`name = "package.module:Class"`). Importing this module imports no backend.
"""

from __future__ import annotations

import importlib
import importlib.util
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from localimg.config import BACKEND_ALIASES, DIFFUSERS, GGML, ModelConfig
from localimg.errors import BackendNotInstalled, ConfigError

if TYPE_CHECKING:
    from localimg.backends.base import Backend, RuntimeSettings

ENTRY_POINT_GROUP = "localimg.backends"

# The class of each built-in backend; their names and aliases are config/backend_names.py's.
BUILTIN: dict[str, str] = {
    DIFFUSERS: "localimg.backends.diffusers.backend:DiffusersBackend",
    GGML: "localimg.backends.ggml.backend:GgmlBackend",
}
ALIASES = BACKEND_ALIASES

EXTRAS: dict[str, str] = {DIFFUSERS: "diffusers", GGML: "ggml"}


def _plugin_targets() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def canonical_name(name: str) -> str:
    """Resolve aliases; unknown names raise a ConfigError that lists the known ones."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key in BUILTIN or key in _plugin_targets():
        return key
    known = sorted({*BUILTIN, *ALIASES, *_plugin_targets()})
    raise ConfigError(f"unknown backend {name!r}; known backends: {', '.join(known)}")


def backend_names() -> list[str]:
    return sorted({*BUILTIN, *_plugin_targets()})


def get_backend_class(name: str) -> type[Backend]:
    """Import a backend class, or say which extra installs it."""
    key = canonical_name(name)
    target = BUILTIN.get(key) or _plugin_targets()[key]
    module_name, _, attr = target.partition(":")
    extra = EXTRAS.get(key)
    install_hint = (
        f"pip install 'localimg[{extra}]'" if extra else f"install the package of {key!r}"
    )
    if importlib.util.find_spec(module_name) is None:
        raise BackendNotInstalled(f"backend {key!r} is not installed ({install_hint})")
    module = importlib.import_module(module_name)
    cls: type[Backend] = getattr(module, attr)
    missing = [
        req for req in getattr(cls, "requirements", ()) if importlib.util.find_spec(req) is None
    ]
    if missing:
        raise BackendNotInstalled(
            f"backend {key!r} is not installed: missing {', '.join(missing)} ({install_hint})"
        )
    return cls


def model_precision(config: ModelConfig, settings: RuntimeSettings | None = None) -> dict[str, Any]:
    """The device and dtype `config` would run with here and why (the backend's `precision`
    hook, offline, nothing loaded), for `models show`, `models list` and `/v1/models`. Where it
    cannot be decided (backend not installed, invalid options) `device`/`dtype` are None and
    `reason` says why: a report, never an exception."""
    from localimg.backends.base import RuntimeSettings, precision_of
    from localimg.errors import LocalimgError

    unknown: dict[str, Any] = {"device": None, "dtype": None, "variant": None}
    try:
        found = precision_of(
            get_backend_class(config.backend), config, settings or RuntimeSettings()
        )
    except LocalimgError as exc:
        return {**unknown, "reason": exc.message}
    if found is None:
        return {**unknown, "reason": f"backend {config.backend!r} does not report its precision"}
    return found
