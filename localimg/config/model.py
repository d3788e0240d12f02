"""Model configuration: LocalAI-compatible YAML files, the models directory and model references.

A model YAML written for LocalAI works here unchanged. Keys localimg uses are validated with
messages that name the file and the key; keys LocalAI has for other kinds of models (text, audio)
are accepted with a warning, so a models directory shared with LocalAI keeps loading.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from localimg.config.localai_keys import LOCALAI_IGNORED_KEYS, LOCALAI_IGNORED_PARAMETERS
from localimg.config.options import OPTION_ALIASES, parse_options, parse_value
from localimg.errors import ConfigError, InvalidRequest

log = logging.getLogger(__name__)

MODELS_PATH_ENV = "LOCALIMG_MODELS_PATH"
DEFAULT_MODEL_ENV = "LOCALIMG_MODEL"
DEFAULT_HUB_MODEL = "stabilityai/sd-turbo"
YAML_SUFFIXES = (".yaml", ".yml")
WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".gguf", ".bin", ".pt", ".pth", ".sft")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


ENABLE_PARAMETER_NAMES = (
    "negative_prompt",
    "num_inference_steps",
    "clip_skip",
    "image",
    "mask_image",
    "guidance_scale",
    "strength",
    "width",
    "height",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Parameters(_Strict):
    """`parameters:` of a LocalAI YAML. Only `model` and `seed` matter for images."""

    model: str | None = None
    seed: int | None = None


class DiffusersSection(_Strict):
    """`diffusers:` of a LocalAI YAML."""

    cuda: bool | None = None
    pipeline_type: str | None = None
    scheduler_type: str | None = None
    enable_parameters: str | None = None
    clip_skip: int | None = None
    cfg_scale: float | None = None
    img2img: bool | None = None
    clip_model: str | None = None
    clip_subfolder: str | None = None
    control_net: str | None = None

    @field_validator("enable_parameters")
    @classmethod
    def _known_parameters(cls, value: str | None) -> str | None:
        if value is None:
            return None
        unknown = [p for p in split_csv(value) if p not in ENABLE_PARAMETER_NAMES]
        if unknown:
            raise ValueError(
                f"unknown parameter(s) {', '.join(unknown)}; allowed: "
                + ", ".join(ENABLE_PARAMETER_NAMES)
            )
        return value


def check_size_text(value: str | None) -> str | None:
    """A YAML `size:` as WIDTHxHEIGHT, in range; ValueError (pydantic's) with the reason."""
    if value is not None:
        from localimg.requests import parse_size

        try:
            parse_size(value)
        except InvalidRequest as exc:
            raise ValueError(exc.message) from None
    return value


class HiresSection(_Strict):
    """`hires:` of a model YAML (localimg): A1111's hires fix for this model. A request that
    asks for a hires fix takes what it leaves unset from here; with `enabled: true` (the default
    when the block is there) every request gets one unless it turns it off."""

    enabled: bool = True
    scale: float | None = Field(default=None, ge=1, le=8)
    size: str | None = None  # WxH of the second pass; wins over scale
    upscaler: str | None = None  # latent, lanczos, bicubic, nearest or an upscale_models/ name
    steps: int | None = Field(default=None, ge=0, le=500)  # 0: the first pass's steps
    denoise: float | None = Field(default=None, gt=0, le=1)

    @field_validator("size")
    @classmethod
    def _size_form(cls, value: str | None) -> str | None:
        return check_size_text(value)


class RaySection(BaseModel):
    """`ray:` of a model YAML (localimg): how `serve --ray` deploys this model. Wins over the
    server's --replicas / --autoscale / --gpus-per-replica for this model."""

    model_config = ConfigDict(extra="forbid")

    replicas: int | None = Field(default=None, ge=1, le=1024)  # a fixed number of replicas
    min_replicas: int | None = Field(default=None, ge=0, le=1024)  # autoscaling between
    max_replicas: int | None = Field(default=None, ge=1, le=1024)  # these two
    gpus_per_replica: float | None = Field(default=None, ge=0, le=64)

    @model_validator(mode="after")
    def _one_way_to_scale(self) -> RaySection:
        bounds = (self.min_replicas, self.max_replicas)
        if self.replicas is not None and bounds != (None, None):
            raise ValueError("give either replicas or min_replicas/max_replicas, not both")
        if (self.min_replicas is None) != (self.max_replicas is None):
            raise ValueError("autoscaling needs both min_replicas and max_replicas")
        low, high = self.min_replicas, self.max_replicas
        if low is not None and high is not None and low > high:
            raise ValueError(f"min_replicas ({low}) is more than max_replicas ({high})")
        return self


class ModelConfig(_Strict):
    """One model: LocalAI's image YAML keys plus a few documented localimg extensions."""

    name: str
    backend: str = "diffusers"
    description: str | None = None
    parameters: Parameters = Field(default_factory=Parameters)
    step: int | None = Field(default=None, ge=1, le=500)
    cfg_scale: float | None = Field(default=None, ge=0, le=100)
    seed: int | None = None
    size: str | None = None  # localimg: default WxH for this model
    f16: bool | None = None  # None: automatic (load/precision.py decides per device and family)
    cuda: bool | None = None
    threads: int | None = Field(default=None, ge=1, le=1024)
    keep_alive: str | float | None = None  # localimg: idle time before unloading (5m, 300, -1)
    memory: str | int | None = None  # localimg: what loading the model takes (14G, 512M)
    diffusers: DiffusersSection = Field(default_factory=DiffusersSection)
    ray: RaySection | None = None  # localimg: replicas and GPUs under `serve --ray`
    hires: HiresSection | None = None  # localimg: the hires fix's defaults
    # localimg: the model's default ControlNet (a `controlnet/` name, a path or a repo id; the
    # `diffusers.control_net` key LocalAI reads works too) and its strength; a request brings
    # the control image.
    control_net: str | None = None
    control_strength: float | None = Field(default=None, ge=0, le=2)
    lora_adapter: str | None = None  # LocalAI's single-adapter form
    lora_scale: float | None = None
    lora_adapters: list[str] = Field(default_factory=list)
    lora_scales: list[float] = Field(default_factory=list)
    options: list[str] = Field(default_factory=list)

    # Where the config came from (not part of the YAML).
    source_file: Path | None = Field(default=None, exclude=True)
    models_path: Path | None = Field(default=None, exclude=True)

    @field_validator("name")
    @classmethod
    def _name_is_safe(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("keep_alive")
    @classmethod
    def _keep_alive_form(cls, value: str | float | None) -> str | float | None:
        if value is not None:
            from localimg._util.units import parse_duration

            parse_duration(value)
        return value

    @field_validator("memory")
    @classmethod
    def _memory_form(cls, value: str | int | None) -> str | int | None:
        if value is not None:
            from localimg._util.units import parse_bytes

            if parse_bytes(value) <= 0:
                raise ValueError("must be more than 0 bytes (e.g. 14G)")
        return value

    @field_validator("size")
    @classmethod
    def _size_form(cls, value: str | None) -> str | None:
        return check_size_text(value)

    @property
    def model(self) -> str | None:
        return self.parameters.model

    @property
    def where(self) -> str:
        """How to name this config in an error message."""
        return str(self.source_file) if self.source_file else f"model {self.name!r}"

    @property
    def default_size(self) -> tuple[int, int] | None:
        from localimg.requests import parse_size

        return parse_size(self.size) if self.size else None

    @property
    def memory_bytes(self) -> int | None:
        """The `memory:` the YAML declares, in bytes (None: not declared). The engine's budget
        counts it instead of its own estimate from the weight files' headers."""
        if self.memory is None:
            return None
        from localimg._util.units import parse_bytes

        return parse_bytes(self.memory)

    @property
    def default_control_net(self) -> str | None:
        """`control_net:` at the top or under `diffusers:` (LocalAI's place for it)."""
        return self.control_net or self.diffusers.control_net

    @model_validator(mode="after")
    def _one_control_net(self) -> ModelConfig:
        top, localai = self.control_net, self.diffusers.control_net
        if top and localai and top != localai:
            raise ValueError(
                f"control_net ({top!r}) and diffusers.control_net ({localai!r}) disagree; keep one"
            )
        return self

    @property
    def default_cfg_scale(self) -> float | None:
        return self.cfg_scale if self.cfg_scale is not None else self.diffusers.cfg_scale

    @property
    def default_seed(self) -> int | None:
        return self.seed if self.seed is not None else self.parameters.seed

    @property
    def use_cuda(self) -> bool | None:
        """`cuda:` at the top or under `diffusers:`; None when neither says."""
        if self.cuda is not None:
            return self.cuda
        return self.diffusers.cuda

    @property
    def enabled_parameters(self) -> frozenset[str] | None:
        """The request parameters `enable_parameters` lets through; None means all."""
        if self.diffusers.enable_parameters is None:
            return None
        return frozenset(split_csv(self.diffusers.enable_parameters))

    def loras(self) -> list[tuple[str, float]]:
        """(file, scale) pairs from `lora_adapters`/`lora_scales` and `lora_adapter`."""
        files = list(self.lora_adapters)
        scales = list(self.lora_scales)
        if len(scales) > len(files):
            raise ConfigError(
                f"{self.where}: lora_scales has {len(scales)} values for {len(files)} adapters"
            )
        scales += [1.0] * (len(files) - len(scales))
        if self.lora_adapter:
            files.append(self.lora_adapter)
            scales.append(self.lora_scale if self.lora_scale is not None else 1.0)
        return list(zip(files, scales, strict=True))

    def check_single_values(self) -> None:
        """Refuse a setting given twice with different values: a YAML key and an option that
        repeats it (`cfg_scale: 5` and `options: ["cfg_scale:6"]`), or two such options. One of
        the two would be silently ignored, so neither is guessed."""
        seen: dict[str, tuple[str, Any]] = {}

        def note(setting: str, key: str, value: Any, label: str | None = None) -> None:
            if value is None:
                return
            label = label or f"{key}: {value}"
            comparable = value.lower() if isinstance(value, str) else value
            if setting in seen and seen[setting][1] != comparable:
                raise ConfigError(
                    f"{self.where}: {setting} is set twice with different values, "
                    f"{seen[setting][0]} and {label}; keep one of them"
                )
            seen.setdefault(setting, (label, comparable))

        note("steps", "step", self.step)
        note("cfg_scale", "cfg_scale", self.cfg_scale)
        note("cfg_scale", "diffusers.cfg_scale", self.diffusers.cfg_scale)
        note("seed", "seed", self.seed)
        note("seed", "parameters.seed", self.parameters.seed)
        scheduler = self.diffusers.scheduler_type
        note("scheduler", "diffusers.scheduler_type", scheduler)
        note("clip_skip", "diffusers.clip_skip", self.diffusers.clip_skip)
        if self.default_size is not None:
            note("width", "size", self.default_size[0], f"size: {self.size}")
            note("height", "size", self.default_size[1], f"size: {self.size}")
        for item in self.options:
            if not isinstance(item, str):
                continue  # parsed_options names the bad item
            key, sep, raw = item.partition(":")
            setting = OPTION_ALIASES.get(key.strip())
            if setting is not None:
                note(setting, key, parse_value(raw) if sep else True, f'options "{item}"')

    def parsed_options(self) -> dict[str, Any]:
        """`options: ["key:value"]` as a typed dict (see options.py)."""
        try:
            return parse_options(self.options)
        except ValueError as exc:
            raise ConfigError(f"{self.where}: options: {exc}") from None

    def resolve_path(self, value: str) -> Path:
        """A file named in the YAML, relative to the models dir; it may not leave that dir."""
        path = Path(value).expanduser()
        if path.is_absolute():
            return path
        base = self.models_path or (self.source_file.parent if self.source_file else Path.cwd())
        # A lexical check: `..` may not climb out, but a symlink the user placed in the models
        # dir (a common way to share weights between tools) is followed.
        joined = Path(os.path.normpath(base.absolute() / path))
        if not joined.is_relative_to(Path(os.path.normpath(base.absolute()))):
            raise ConfigError(f"{self.where}: {value!r} points outside the models directory {base}")
        return joined

    def warn_unused_keys(self) -> None:
        """Log a warning for each key localimg does not use."""
        for key in self.model_extra or {}:
            if key in LOCALAI_IGNORED_KEYS:
                log.warning("%s: key %r is a LocalAI key localimg ignores", self.where, key)
            else:
                log.warning("%s: unknown key %r is ignored", self.where, key)
        for key in self.parameters.model_extra or {}:
            kind = (
                "LocalAI key localimg ignores"
                if key in LOCALAI_IGNORED_PARAMETERS
                else "unknown key"
            )
            log.warning("%s: parameters.%s is a %s", self.where, key, kind)
        for key in self.diffusers.model_extra or {}:
            log.warning("%s: unknown key diffusers.%s is ignored", self.where, key)
        for key in ("clip_model", "clip_subfolder", "img2img"):
            if getattr(self.diffusers, key) is not None:
                log.warning(
                    "%s: diffusers.%s is not supported by localimg yet and is ignored",
                    self.where,
                    key,
                )


def split_csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def default_models_path() -> Path:
    """`LOCALIMG_MODELS_PATH`, else the per-user data dir (platformdirs)."""
    env = os.environ.get(MODELS_PATH_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return platformdirs.user_data_path("localimg", appauthor=False) / "models"
