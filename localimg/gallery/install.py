"""Install and remove gallery models in the models directory, directly or as background jobs.

Install = resolve the entry (gallery.py), refuse anything unsafe or invalid before a byte is
fetched, download and verify the files (download.py), then write `._gallery_NAME.yaml` (what was
installed from where) and `NAME.yaml` (the model), each atomically. A diffusers model that names a
hub repo gets that repo's pipeline files fetched into the Hugging Face cache now, verified against
the hub's sha256, so the first generation does not stall on a download. In offline mode
(HF_HUB_OFFLINE) nothing can be fetched: the YAML is still installed, and when the repo is not in
the local cache a warning says that its first use downloads it, which offline mode prevents.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from localimg import download
from localimg._util.files import write_atomic
from localimg._util.hub_cache import cached_pipeline
from localimg._util.hub_errors import offline_mode
from localimg.config import HUB_ID, load_config_file, scan_models
from localimg.errors import GalleryError, LocalimgError, ModelNotFound
from localimg.gallery import controlnets
from localimg.gallery.catalog import (
    RECORD_PREFIX,
    Catalog,
    GalleryEntry,
    check_resolved,
    resolve_entry,
)

WEIGHT_SUFFIXES = (".safetensors", ".bin")
# Configs, tokenizer vocabularies and chat templates (transformers saves `chat_template.jinja`:
# without it a Qwen3 or Mistral text encoder cannot format its prompt).
CONFIG_SUFFIXES = (".json", ".txt", ".model", ".jinja")


def record_path(models_path: Path, name: str) -> Path:
    return models_path / f"{RECORD_PREFIX}{name}.yaml"


def read_record(models_path: Path, name: str) -> dict[str, Any] | None:
    path = record_path(models_path, name)
    if not path.is_file():
        return None
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else None


def write_yaml_atomic(path: Path, data: dict[str, Any]) -> None:
    """A model's YAML, written whole or not at all."""
    write_atomic(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


# -- hub pipeline prefetch -------------------------------------------------------------------


def select_pipeline_files(names: list[str], variant: str | None) -> list[str]:
    """The files `from_pretrained` reads from a diffusers repo: configs and one weight set.

    Root-level single-file checkpoints, ONNX/Flax exports and the other precision's weights are
    left out (they can be most of a repo's size).
    """
    has_index = "model_index.json" in names
    chosen: list[str] = []
    folders: dict[str, list[str]] = {}
    for name in names:
        path = PurePosixPath(name)
        depth = len(path.parts)
        if has_index and depth == 1:
            if name == "model_index.json":
                chosen.append(name)
            continue
        if depth > 2 or path.parts[0] in ("onnx", "flax", ".git") or name.startswith("."):
            continue
        if path.suffix in CONFIG_SUFFIXES:
            chosen.append(name)
        elif path.suffix in WEIGHT_SUFFIXES:
            folders.setdefault(str(path.parent), []).append(name)

    def variant_of(name: str) -> str | None:
        parts = PurePosixPath(name).name.split(".")
        return parts[-2] if len(parts) > 2 else None

    for weights in folders.values():
        for suffix in (".safetensors", ".bin"):
            same = [w for w in weights if w.endswith(suffix)]
            wanted = [w for w in same if variant_of(w) == variant]
            if not wanted and variant:
                wanted = [w for w in same if variant_of(w) is None]
            if wanted:
                chosen += wanted
                break
    return sorted(chosen)


def snapshot_tasks(repo: str, revision: str | None, variant: str | None) -> list[download.Task]:
    """Hub-cache downloads of a diffusers repo's pipeline files, with the hub's sha256."""
    from huggingface_hub import HfApi, constants

    if constants.is_offline_mode():
        return []
    try:
        info = HfApi(endpoint=download.hub_endpoint()).model_info(
            repo, revision=revision, files_metadata=True
        )
    except Exception as exc:  # huggingface_hub's errors, HTTP errors
        raise download.hub_error(exc, f"hub repo {repo!r}", action="list") from None
    siblings = {s.rfilename: s for s in info.siblings or []}
    tasks = []
    for name in select_pipeline_files(list(siblings), variant):
        sibling = siblings[name]
        lfs = sibling.lfs
        tasks.append(
            download.Task(
                name=f"{repo}/{name}",
                source=download.Source("hub", repo, name, info.sha or revision),
                target=None,
                sha256=lfs.sha256 if lfs else None,
                size=lfs.size if lfs else sibling.size,
            )
        )
    return tasks


def offline_miss(repo: str, revision: str | None, name: str) -> str | None:
    """The warning for a hub repo that offline mode kept from being fetched and the local cache
    lacks (None when online, or when its weights are cached already)."""
    if not offline_mode():
        return None
    cached = cached_pipeline(repo, revision)
    if not isinstance(cached, str):
        return None
    return (
        f"{cached}, and offline mode is on (HF_HUB_OFFLINE=1): no weights were downloaded. "
        f"{name}'s first use downloads them, which offline mode prevents: unset HF_HUB_OFFLINE "
        "first (or install again once online)"
    )


def _hub_repo(config: dict[str, Any], models_path: Path) -> str | None:
    model = (config.get("parameters") or {}).get("model")
    backend = str(config.get("backend", "diffusers")).lower()
    if backend not in ("diffusers", "huggingface-diffusers") or not isinstance(model, str):
        return None
    if not HUB_ID.match(model) or (models_path / model).exists():
        return None
    return model


def drop_unshipped_paths(
    config: dict[str, Any], shipped: list[str], models_path: Path
) -> list[str]:
    """Drop `*_path` options naming a file the entry does not ship and the models dir lacks.

    Merging `options` by key keeps a template's file options; an entry written for LocalAI's
    replace-the-list merge (its sd-1.5-ggml sets only `sampler:euler` over the SD3 template)
    would otherwise point at text encoders that never arrive. Returns a note per dropped option.
    """
    kept, notes = [], []
    for option in config.get("options") or []:
        key, _, value = str(option).partition(":")
        if (
            key.endswith("_path")
            and value
            and not Path(value).is_absolute()
            and value not in shipped
            and not (models_path / value).exists()
        ):
            notes.append(f"dropped option {option!r}: the entry ships no file {value!r}")
            continue
        kept.append(option)
    if "options" in config:
        config["options"] = kept
    return notes


# -- install / remove ------------------------------------------------------------------------


@dataclass
class InstallResult:
    name: str
    yaml_path: Path
    files: list[Path]
    hub_repo: str | None
    already_installed: bool
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # what the user must know: weights missing


def check_engine_family(entry: GalleryEntry, config: dict[str, Any]) -> None:
    """Refuse, before any download, a stablediffusion-ggml entry whose `family:` the bundled
    stable-diffusion.cpp cannot load (it would fail, or load it as an older family, only after
    gigabytes were fetched), naming what runs it instead."""
    from localimg.backends.ggml.file_families import BY_SLUG
    from localimg.config.backend_names import GGML, builtin_backend

    slug = (entry.model_extra or {}).get("family")
    backend = builtin_backend(str(config.get("backend", "diffusers")))
    if not isinstance(slug, str) or backend != GGML:
        return
    family = BY_SLUG.get(slug.strip().lower())
    if family is not None:
        raise GalleryError(
            f"{entry.qualified} is a stablediffusion-ggml model of the {family.label} family "
            f"({slug}), which the bundled stable-diffusion.cpp (stable-diffusion-cpp-python "
            f"0.4.7) cannot load; {family.advice()}"
        )


def install(
    entry: GalleryEntry,
    models_path: Path,
    *,
    name: str | None = None,
    progress: download.Progress | None = None,
    cancel: threading.Event | None = None,
    prefetch: bool = True,
    workers: int = 4,
) -> InstallResult:
    """Install one entry; installing it again re-verifies its files and keeps its YAML."""
    if controlnets.is_side_files(entry):  # files for controlnet/ or upscale_models/, no YAML
        done = controlnets.install_files(
            entry, models_path, name=name, progress=progress, cancel=cancel, workers=workers
        )
        return InstallResult(done[0], done[1], done[2], None, done[3])
    resolved = resolve_entry(entry, name)
    notes = drop_unshipped_paths(resolved.config, [f.filename for f in resolved.files], models_path)
    check_resolved(resolved)
    check_engine_family(entry, resolved.config)
    model_name = str(resolved.config["name"])
    specs = [download.FileSpec(f.filename, f.uri, f.sha256 or None) for f in resolved.files]
    tasks = download.plan(specs, models_path)
    yaml_path = models_path / f"{model_name}.yaml"
    record = read_record(models_path, model_name)
    already = yaml_path.is_file()
    if already and record is None:
        raise GalleryError(
            f"a model named {model_name!r} already exists in {models_path} and was not installed "
            "from the gallery; remove it first or install under another name (--name)"
        )
    hub_repo = _hub_repo(resolved.config, models_path) if prefetch else None
    warnings = []
    if hub_repo:
        options = [str(o) for o in resolved.config.get("options") or []]
        variant = next((o.split(":", 1)[1] for o in options if o.startswith("variant:")), None)
        revision = next((o.split(":", 1)[1] for o in options if o.startswith("revision:")), None)
        tasks += snapshot_tasks(hub_repo, revision, variant)
        missing = offline_miss(hub_repo, revision, model_name)
        warnings += [missing] if missing else []
    download.fetch_tasks(tasks, models_path, progress, workers=workers, cancel=cancel)
    write_yaml_atomic(
        record_path(models_path, model_name),
        {
            "name": model_name,
            "entry": entry.name,
            "gallery": entry.gallery,
            "installed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "hub_repo": hub_repo,
            "files": [
                {"filename": f.filename, "sha256": f.sha256, "uri": f.uri} for f in resolved.files
            ],
        },
    )
    if not already:
        write_yaml_atomic(yaml_path, resolved.config)
    load_config_file(yaml_path, models_path)  # what was written must load
    files = [t.target for t in tasks if t.target]
    return InstallResult(model_name, yaml_path, files, hub_repo, already, notes, warnings)


@dataclass
class RemoveResult:
    name: str
    yaml_path: Path
    removed: list[Path]
    kept_shared: list[Path]


def remove(name: str, models_path: Path, *, purge_files: bool = False) -> RemoveResult:
    """Delete a model's YAML (and its gallery record); with purge_files, its files too.

    A file another installed model also lists (FLUX's shared VAE and text encoders) is kept.
    """
    entries = scan_models(models_path)
    match = next((e for e in entries if e.name == name or e.path.stem == name), None)
    record_file = record_path(models_path, name)
    kind = (read_record(models_path, name) or {}).get("kind")
    if match is None and kind in controlnets.FOLDERS:
        shared = _files_of_other_records(models_path, name)
        gone, kept_files = controlnets.remove_files(models_path, record_file, shared)
        return RemoveResult(name, record_file, gone, kept_files)
    if match is None:
        import difflib

        names = [e.name for e in entries]
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ModelNotFound(f"no installed model {name!r} in {models_path}.{hint}", param="model")
    record_name = match.config.name if match.config else match.path.stem
    record = read_record(models_path, record_name) or {}
    removed: list[Path] = []
    kept: list[Path] = []
    if purge_files:
        shared = _files_of_other_records(models_path, record_name)
        for item in record.get("files") or []:
            target = download.safe_target(models_path, str(item["filename"]))
            if target in shared:
                kept.append(target)
            elif target.exists():
                target.unlink()
                removed.append(target)
                download.partial_path(target).unlink(missing_ok=True)
                _prune_empty_dirs(target.parent, models_path)
    match.path.unlink()
    record_path(models_path, record_name).unlink(missing_ok=True)
    return RemoveResult(record_name, match.path, removed, kept)


def _files_of_other_records(models_path: Path, name: str) -> set[Path]:
    shared: set[Path] = set()
    for path in models_path.glob(f"{RECORD_PREFIX}*.yaml"):
        if path.name == f"{RECORD_PREFIX}{name}.yaml":
            continue
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for item in data.get("files") or []:
            try:
                shared.add(download.safe_target(models_path, str(item["filename"])))
            except (GalleryError, KeyError, TypeError):
                continue
    return shared


def _prune_empty_dirs(folder: Path, root: Path) -> None:
    root = root.resolve()
    while folder.resolve() != root and folder.resolve().is_relative_to(root):
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


# -- background install jobs (the server's POST /models/apply) ------------------------------


@dataclass
class InstallJob:
    id: str
    model: str
    progress: download.CountingProgress = field(default_factory=download.CountingProgress)
    cancel: threading.Event = field(default_factory=threading.Event)
    status: str = "queued"  # queued, downloading, done, error
    error: str | None = None
    result: InstallResult | None = None

    def to_localai(self) -> dict[str, Any]:
        """LocalAI's /models/jobs/{uuid} shape."""
        done, total = self.progress.snapshot()
        percent = 100.0 if self.status == "done" else (100.0 * done / total if total else 0.0)
        return {
            "uuid": self.id,
            "gallery_element_name": self.model,
            "status": self.status,
            "processed": self.status in ("done", "error"),
            "deletion": False,
            "message": self.error or self._message(),
            "error": self.error,
            "progress": round(percent, 2),
            "file_name": self.progress.current,
            "downloaded_size": str(done),
            "file_size": str(total),
            "installed": self.status == "done",
        }

    def _message(self) -> str:
        if self.status != "done":
            return self.status
        warnings = self.result.warnings if self.result is not None else []
        return "; ".join(["completed", *(f"warning: {w}" for w in warnings)])


class InstallJobs:
    """Install jobs run one at a time on a background thread; looked up by id."""

    def __init__(self, models_path: Path, catalog: Callable[[], Catalog]) -> None:
        self.models_path = models_path
        self._catalog = catalog
        self._jobs: dict[str, InstallJob] = {}
        self._lock = threading.Lock()
        self._serial = threading.Lock()

    def submit(self, ref: str, name: str | None = None) -> InstallJob:
        entry = self._catalog().find(ref)  # unknown names fail now, with suggestions
        job = InstallJob(id=str(uuid.uuid4()), model=entry.name)
        with self._lock:
            self._jobs[job.id] = job
        thread = threading.Thread(
            target=self._run,
            args=(job, entry, name),
            name=f"localimg-install-{job.id}",
            daemon=True,
        )
        thread.start()
        return job

    def _run(self, job: InstallJob, entry: GalleryEntry, name: str | None) -> None:
        with self._serial:
            job.status = "downloading"
            try:
                job.result = install(
                    entry, self.models_path, name=name, progress=job.progress, cancel=job.cancel
                )
            except LocalimgError as exc:
                job.error = exc.message
                job.status = "error"
            except Exception as exc:  # reported on the job, never lost in a thread
                job.error = f"{type(exc).__name__}: {exc}"
                job.status = "error"
            else:
                job.status = "done"

    def get(self, job_id: str) -> InstallJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def all(self) -> list[InstallJob]:
        with self._lock:
            return list(self._jobs.values())

    def cancel_all(self) -> None:
        for job in self.all():
            job.cancel.set()
