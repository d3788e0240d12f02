"""The model gallery: load indexes, merge an entry into its template, install and remove models.

An index is a YAML list of entries (localimg's `gallery/index.yaml`, LocalAI's own
`gallery/index.yaml`, or any file or URL in that format). An entry names a template (`url:` or
`template:`, whose `config_file` holds the backend settings), `overrides` for it and the `files`
to fetch. Installing writes `NAME.yaml` into the models dir plus a hidden `._gallery_NAME.yaml`
record of the files, so `remove --purge-files` knows what belongs to the model.

Merging differs from LocalAI in one place on purpose: `options: ["key:value"]` lists merge by
key, so an entry that sets `sampler:euler_a` keeps the template's `clip_l_path`, `t5xxl_path` and
`vae_path` (LocalAI replaces the whole list and its FLUX entries lose them).
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from localimg import download
from localimg._util.units import parse_bytes
from localimg._util.validation import first_problem
from localimg.config import BUILTIN_BACKENDS, builtin_backend
from localimg.errors import ConfigError, GalleryError, ModelNotFound

GALLERIES_ENV = "LOCALIMG_GALLERIES"
# A checkout keeps the gallery at the repo root; a wheel ships it as localimg/gallery_data.
_SOURCE_INDEX = Path(__file__).resolve().parents[2] / "gallery" / "index.yaml"
BUILTIN_INDEX = (
    _SOURCE_INDEX
    if _SOURCE_INDEX.is_file()
    else Path(__file__).resolve().parents[1] / "gallery_data" / "index.yaml"
)
LOCALAI_INDEX = "github:mudler/LocalAI/gallery/index.yaml@master"
SHORTCUTS = {"localai": LOCALAI_INDEX}
IMAGE_BACKENDS = BUILTIN_BACKENDS
IMAGE_TAGS = frozenset(
    {
        "text-to-image",
        "image-generation",
        "image-to-image",
        "image-to-video",
        "text-to-video",
        "stable-diffusion",
        "stablediffusion",
        "diffusers",
        "sd-1.5",
        "sdxl",
        "sd3",
        "sd3.5",
    }
)
# Tags of LocalAI's other model kinds: an entry carrying one (and no image tag) is not listed.
OTHER_KIND_TAGS = frozenset(
    {"llm", "gguf-llm", "chat", "tts", "stt", "asr", "whisper", "embeddings", "rerank", "vad"}
)
# Indexes that hold every kind of model: only recognisable image entries are listed from them.
BROAD_INDEXES = frozenset({LOCALAI_INDEX})
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
RECORD_PREFIX = "._gallery_"


class GalleryFile(BaseModel):
    """One file of an entry. `sha256` may be empty only with a `sha256_reason` (gallery-check)."""

    model_config = ConfigDict(extra="allow")

    filename: str
    uri: str
    sha256: str = ""
    sha256_reason: str | None = None


class GalleryEntry(BaseModel):
    """An index entry, in LocalAI's shape; keys localimg does not use are kept, not refused."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str
    description: str = ""
    license: str = ""
    urls: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    icon: str = ""
    url: str | None = None  # LocalAI: the template (a YAML with `config_file`)
    template: str | None = None  # localimg: the same, by file name or URL
    config_file: str | dict[str, Any] | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)
    files: list[GalleryFile] = Field(default_factory=list)
    # localimg: "model" (a model YAML and its files), "controlnet" (files for controlnet/ only)
    # or "upscaler" (files for upscale_models/ only): gallery/controlnets.py
    kind: str = "model"

    gallery: str = Field(default="", exclude=True)  # the index it came from
    base: str | None = Field(default=None, exclude=True)  # where relative templates resolve

    @property
    def template_ref(self) -> str | None:
        return self.template or self.url

    @property
    def qualified(self) -> str:
        return f"{self.gallery}@{self.name}" if self.gallery else self.name

    @property
    def memory(self) -> str | None:
        """The `memory:` the entry's model YAML will declare (its overrides, else its inline
        config_file), as written; None when it says none. Read without fetching the template."""
        value = self.overrides.get("memory")
        if value is None:
            value = _inline_config(self).get("memory")
        return None if value is None else str(value)

    @property
    def memory_bytes(self) -> int | None:
        """`memory` in bytes; None when absent or not a size (the install refuses that)."""
        try:
            return parse_bytes(self.memory) if self.memory is not None else None
        except ValueError:
            return None

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "gallery": self.gallery,
            "description": self.description.strip(),
            "license": self.license,
            "tags": self.tags,
            "urls": self.urls,
            "icon": self.icon,
            "memory": self.memory,
            "memory_bytes": self.memory_bytes,
            "files": [f.filename for f in self.files],
        }


@dataclass(frozen=True)
class GallerySource:
    name: str
    url: str


def parse_galleries(text: str) -> list[GallerySource]:
    """`LOCALIMG_GALLERIES`: LocalAI's JSON `[{"name","url"}]` or comma-separated refs."""
    text = text.strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            items = json.loads(text)
            return [GallerySource(str(i["name"]), str(i["url"])) for i in items]
        except (ValueError, KeyError, TypeError):
            raise GalleryError(
                f"{GALLERIES_ENV} is not valid: expected a JSON list of "
                '{"name": ..., "url": ...} or comma-separated index paths/URLs'
            ) from None
    return [_source(ref.strip()) for ref in text.split(",") if ref.strip()]


def _source(ref: str) -> GallerySource:
    if ref in SHORTCUTS:
        return GallerySource(ref, SHORTCUTS[ref])
    name, sep, url = ref.partition("=")
    if sep and NAME.match(name) and url:
        return GallerySource(name, url)
    stem = re.sub(r"[^\w.-]", "-", Path(ref.rstrip("/")).stem)
    parent = Path(ref.rstrip("/")).parent.name
    return GallerySource(f"{parent}-{stem}" if stem == "index" and parent else stem, ref)


def default_sources(extra: Sequence[str] = (), *, builtin: bool = True) -> list[GallerySource]:
    """The shipped index, then `LOCALIMG_GALLERIES`, then `--gallery` arguments."""
    sources = []
    if builtin and BUILTIN_INDEX.is_file():
        sources.append(GallerySource("localimg", str(BUILTIN_INDEX)))
    sources += parse_galleries(os.environ.get(GALLERIES_ENV, ""))
    sources += [_source(ref) for ref in extra]
    return sources


def load_index(source: GallerySource) -> list[GalleryEntry]:
    """Every entry of one index; a broken entry is an error naming the index and the entry."""
    text = download.fetch_text(source.url)
    try:
        # LocalAI's index is ~50k lines: the C loader reads it ten times faster when present.
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise GalleryError(f"gallery {source.url}: invalid YAML: {exc}") from None
    if data is None:
        return []
    if not isinstance(data, list):
        raise GalleryError(f"gallery {source.url}: expected a list of model entries")
    entries = []
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise GalleryError(f"gallery {source.url}: entry {index + 1} is not a mapping")
        try:
            entry = GalleryEntry.model_validate(item)
        except ValidationError as exc:
            label = item.get("name", f"#{index + 1}")
            problem = first_problem(exc)
            raise GalleryError(
                f"gallery {source.url}: entry {label!r}: {problem.key}: {problem.message}"
            ) from None
        entry.gallery = source.name
        entry.base = source.url
        entries.append(entry)
    return entries


@dataclass
class Catalog:
    """All entries of the configured galleries; the first gallery wins a name."""

    entries: list[GalleryEntry]
    sources: list[GallerySource] = field(default_factory=list)

    @classmethod
    def load(cls, sources: Sequence[GallerySource]) -> Catalog:
        entries: list[GalleryEntry] = []
        for source in sources:
            entries += load_index(source)
        return cls(entries, list(sources))

    def image_entries(self) -> list[GalleryEntry]:
        """The entries to list. LocalAI's big index mixes every kind of model, so only its
        entries that are recognisably image models are kept; an index the user named lists
        every entry that is not clearly another kind (an entry with no tags installs, so it
        must show)."""
        broad = {s.name for s in self.sources if s.url in BROAD_INDEXES}
        return [
            e
            for e in self.entries
            if (is_image_entry(e) if e.gallery in broad else not is_other_kind(e))
        ]

    def find(self, ref: str) -> GalleryEntry:
        """By name, or `gallery@name`; an unknown name suggests the closest ones."""
        gallery, sep, name = ref.partition("@")
        if not sep:
            gallery, name = "", ref
        for entry in self.entries:
            if entry.name == name and (not gallery or entry.gallery == gallery):
                return entry
        for entry in self.entries:  # names are case-insensitive as a fallback
            if entry.name.lower() == name.lower() and (not gallery or entry.gallery == gallery):
                return entry
        names = [e.name for e in self.image_entries()] or [e.name for e in self.entries]
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        where = ", ".join(s.name for s in self.sources) or "no galleries"
        raise ModelNotFound(
            f"no model {ref!r} in the gallery ({where}).{hint} "
            "See `localimg gallery list` or `localimg gallery search TEXT`.",
            param="model",
        )

    def search(self, text: str, tag: str | None = None) -> list[GalleryEntry]:
        words = text.lower().split()
        found = []
        for entry in self.image_entries():
            if tag and tag.lower() not in (t.lower() for t in entry.tags):
                continue
            hay = " ".join([entry.name, entry.description, *entry.tags, entry.license]).lower()
            if all(w in hay for w in words):
                found.append(entry)
        return found


def is_other_kind(entry: GalleryEntry) -> bool:
    """An entry that says it is not an image model: another backend, or a non-image tag."""
    backend = entry.overrides.get("backend") or _inline_config(entry).get("backend")
    if backend and not is_image_entry(entry):
        return True
    return bool(OTHER_KIND_TAGS & {t.lower() for t in entry.tags}) and not (
        IMAGE_TAGS & {t.lower() for t in entry.tags}
    )


def is_image_entry(entry: GalleryEntry) -> bool:
    """Whether an entry (from any index) is an image model, without fetching its template."""
    backend = entry.overrides.get("backend") or _inline_config(entry).get("backend")
    if backend:
        return builtin_backend(str(backend)) is not None
    if IMAGE_TAGS & {t.lower() for t in entry.tags}:
        return True
    ref = (entry.template_ref or "").lower()
    return any(k in ref for k in ("ggml.yaml", "diffusers", "dreamshaper", "stablediffusion"))


# -- merging ------------------------------------------------------------------------------------


def option_key(item: Any) -> str:
    return str(item).partition(":")[0].strip()


def merge_options(base: Sequence[Any], overrides: Sequence[Any]) -> list[Any]:
    """`options` merge by key: an override replaces the same key in place, new keys append."""
    merged = list(base)
    for item in overrides:
        key = option_key(item)
        for index, existing in enumerate(merged):
            if option_key(existing) == key:
                merged[index] = item
                break
        else:
            merged.append(item)
    return merged


def merge_config(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep merge: maps merge, `options` lists merge by key, any other value is replaced."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_config(merged[key], value)
        elif key == "options" and isinstance(value, list) and isinstance(merged.get(key), list):
            merged[key] = merge_options(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _parse_config_file(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    try:
        data = yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise GalleryError(f"{where}: config_file is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise GalleryError(f"{where}: config_file must be a mapping of model settings")
    return data


def _inline_config(entry: GalleryEntry) -> dict[str, Any]:
    try:
        return _parse_config_file(entry.config_file, entry.name)
    except GalleryError:
        return {}


_template_cache: dict[str, dict[str, Any]] = {}
_template_lock = threading.Lock()


def load_template(ref: str, base: str | None) -> dict[str, Any]:
    """A template YAML (`config_file` + optional `files`), by path or URL; cached per process."""
    location = download.resolve_ref(ref, base)
    with _template_lock:
        cached = _template_cache.get(location)
    if cached is not None:
        return copy.deepcopy(cached)
    text = download.fetch_text(location)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise GalleryError(f"template {location}: invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise GalleryError(f"template {location}: expected a mapping with a config_file")
    with _template_lock:
        _template_cache[location] = data
    return copy.deepcopy(data)


@dataclass
class Resolved:
    """An entry made concrete: the model YAML to write and every file to fetch."""

    entry: GalleryEntry
    config: dict[str, Any]
    files: list[GalleryFile]


def resolve_entry(entry: GalleryEntry, name: str | None = None) -> Resolved:
    """Template `config_file` ← entry `config_file` ← `overrides`, named after the entry."""
    template: dict[str, Any] = {}
    if entry.template_ref:
        template = load_template(entry.template_ref, entry.base)
    where = f"gallery entry {entry.name!r}"
    config = _parse_config_file(template.get("config_file"), f"{where} (template)")
    config = merge_config(config, _parse_config_file(entry.config_file, where))
    config = merge_config(config, entry.overrides)
    config["name"] = name or entry.name
    if entry.description and "description" not in config:
        config["description"] = " ".join(entry.description.split())
    files = [GalleryFile.model_validate(f) for f in template.get("files") or []]
    by_name = {f.filename: f for f in files}
    for item in entry.files:
        by_name[item.filename] = item
    return Resolved(entry, config, list(by_name.values()))


def check_resolved(resolved: Resolved) -> None:
    """Refuse, before any download, an entry that is not an image model or is invalid."""
    from localimg.backends import canonical_name
    from localimg.config import config_from_dict

    name = str(resolved.config["name"])
    if not NAME.match(name):
        raise GalleryError(
            f"model name {name!r} cannot be a file name (letters, digits, '.', '_', '-', '+')"
        )
    backend = str(resolved.config.get("backend", "diffusers"))
    try:
        canonical_name(backend)
    except ConfigError:
        raise GalleryError(
            f"{resolved.entry.qualified} uses backend {backend!r}, which is not an image "
            f"backend; localimg installs image models ({', '.join(IMAGE_BACKENDS)})"
        ) from None
    try:
        config_from_dict(dict(resolved.config), where=f"gallery entry {resolved.entry.name!r}")
    except ConfigError as exc:
        raise GalleryError(exc.message) from None
