"""How much memory a model needs, how much a worker uses, and how much the machine has left.

The engine checks a model against the memory budget *before* loading it (lifecycle.py), so a
model that does not fit evicts idle ones or gets a clear error instead of the kernel's OOM killer.
The estimate reads only safetensors headers (a few KiB per file), never the weights: the
tensors' element counts times the bytes per element of the dtype the model will load in, plus a
margin for activations and the runtime. A hub model is read from the local Hugging Face cache
(_util/hub_cache.py), never downloaded for an estimate; when no estimate can be made (not cached,
unreadable) the log says why, once per model at INFO.

Everything here is standard library; /proc is read on Linux and other systems get `None`
("unknown"), which the budget treats as "no information", never as zero.
"""

from __future__ import annotations

import gc
import json
import logging
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localimg._util.hub_cache import cached_pipeline
from localimg._util.system import trim_heap
from localimg.config import WEIGHT_SUFFIXES, model_source, resolve_controlnet
from localimg.errors import LocalimgError

if TYPE_CHECKING:
    from localimg.backends.base import RuntimeSettings
    from localimg.config import ModelConfig

log = logging.getLogger(__name__)

ACTIVATION_MARGIN = 0.2  # of the weights: latents, attention maps, the VAE decode
RUNTIME_OVERHEAD = 256 * 1024**2  # a process with torch imported, its allocator's slack
SAFETENSORS_ITEMSIZE = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
}
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16"})


@dataclass(frozen=True)
class Need:
    """What loading a model will take, and where (RAM, or VRAM on a GPU)."""

    bytes: int
    where: str  # "ram" or "vram"


def safetensors_bytes(path: Path, float_itemsize: int | None) -> int:
    """Bytes the tensors of a .safetensors file take once loaded.

    Floating-point tensors are counted at `float_itemsize` (the dtype the backend casts them to;
    None keeps the file's own); others at their own size. Falls back to the file size if the
    header cannot be read.
    """
    try:
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > 100 * 1024**2:
                return path.stat().st_size
            header = json.loads(handle.read(length))
    except (OSError, ValueError, struct.error):
        return path.stat().st_size
    total = 0
    for name, info in header.items():
        if name == "__metadata__" or not isinstance(info, dict):
            continue
        count = 1
        for dim in info.get("shape", []):
            count *= int(dim)
        dtype = str(info.get("dtype", "F32"))
        size = SAFETENSORS_ITEMSIZE.get(dtype, 4)
        if float_itemsize is not None and dtype in FLOAT_DTYPES:
            size = float_itemsize
        total += count * size
    return total


def _weight_files(folder: Path, variant: str | None) -> list[Path]:
    """The weight files a diffusers folder loads: one set per component folder.

    A component folder may hold several copies (fp32 and `.fp16.` variants, .bin and
    .safetensors); the variant asked for wins, then safetensors, as in diffusers.
    """
    chosen: list[Path] = []
    by_folder: dict[Path, list[Path]] = {}
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix.lower() in WEIGHT_SUFFIXES:
            by_folder.setdefault(path.parent, []).append(path)
    for files in by_folder.values():
        tagged = [p for p in files if variant and f".{variant}." in p.name]
        plain = [p for p in files if p not in tagged and not _has_variant_tag(p)]
        group = tagged or plain or files
        safetensors = [p for p in group if p.suffix.lower() == ".safetensors"]
        chosen += safetensors or group
    return chosen


def _has_variant_tag(path: Path) -> bool:
    """`model.fp16.safetensors`, `x.non_ema.bin`: a second suffix names a variant."""
    parts = path.name.split(".")
    sharded = "-of-" in path.name
    return len(parts) > 2 and not sharded


def _backend_class(config: ModelConfig) -> type | None:
    from localimg.backends import get_backend_class
    from localimg.errors import BackendNotInstalled

    try:
        return get_backend_class(config.backend)
    except BackendNotInstalled:
        return None


def load_itemsize(config: ModelConfig, device_kind: str) -> int | None:
    """Bytes per float element once loaded (None: as stored, e.g. ggml's quantized files): the
    backend's own answer (weight_itemsize); None when the backend is not installed."""
    from localimg.backends.base import weight_itemsize_of

    cls = _backend_class(config)
    return None if cls is None else weight_itemsize_of(cls, config, device_kind)


def backend_weight_files(config: ModelConfig) -> list[Path] | None:
    """The weight files the backend says loading `config` reads (None: it does not say)."""
    from localimg.backends.base import weight_files_of

    cls = _backend_class(config)
    if cls is None:
        return None
    try:
        return weight_files_of(cls, config)
    except Exception as exc:  # a bad option fails clearly when the model loads
        log.debug("%s: the backend names no weight files (%s): the model's only", config.name, exc)
        return None


def device_kind(config: ModelConfig, runtime: RuntimeSettings) -> str:
    """Where a model's weights will live, decided without importing torch."""
    device = (runtime.device or "auto").lower()
    if device.startswith(("cuda", "mps")):
        return "vram"
    if device == "cpu" or config.use_cuda is False:
        return "ram"
    return "vram" if Path("/proc/driver/nvidia/version").exists() else "ram"


def estimate(config: ModelConfig, runtime: RuntimeSettings) -> Need | None:
    """What loading `config` will take; None when the files cannot be seen (a hub id not yet
    in the cache, say: the log says why), in which case only the loaded-model count limits it.

    A `memory:` the YAML declares wins over the estimate: it is what the model's author measured
    or computed for the model's settings (text encoders, offload), which the headers cannot see.
    """
    kind = device_kind(config, runtime)
    declared = config.memory_bytes
    if declared is not None:
        return Need(bytes=declared, where=kind)
    try:
        files = files_to_load(config)
        if isinstance(files, str):
            _no_estimate(config, files)
            return None
        itemsize = load_itemsize(config, kind)
        weights = 0
        for path in files:
            if path.suffix.lower() == ".safetensors":
                weights += safetensors_bytes(path, itemsize)
            else:
                weights += path.stat().st_size
    except OSError as exc:
        _no_estimate(config, f"its weight files cannot be read ({exc})")
        return None
    for file, _scale in config.loras():
        lora = config.resolve_path(file)
        if lora.is_file():
            weights += lora.stat().st_size
    weights += controlnet_bytes(config, itemsize)
    total = int(weights * (1 + ACTIVATION_MARGIN)) + RUNTIME_OVERHEAD
    return Need(bytes=total, where=kind)


def controlnet_bytes(config: ModelConfig, itemsize: int | None, ref: str | None = None) -> int:
    """A ControlNet loaded beside the model (the YAML's `control_net` unless `ref` names
    another): its local weights at the model's precision (a repo id is not counted: nothing is
    looked up for an estimate)."""
    ref = ref or config.default_control_net
    if not ref:
        return 0
    try:
        path = Path(resolve_controlnet(ref, config.models_path))
    except LocalimgError:
        return 0
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    total = 0
    for file in files:
        if not file.is_file():
            continue  # a repo id
        if file.suffix.lower() == ".safetensors":
            total += safetensors_bytes(file, itemsize)
        else:
            total += file.stat().st_size
    return total


def controlnet_need(ref: str, config: ModelConfig, runtime: RuntimeSettings) -> Need:
    """What a ControlNet a request brings adds to its model's memory once loaded."""
    kind = device_kind(config, runtime)
    try:
        itemsize = load_itemsize(config, kind)
        weights = controlnet_bytes(config, itemsize, ref)
    except OSError:
        weights = 0
    return Need(bytes=int(weights * (1 + ACTIVATION_MARGIN)), where=kind)


def files_to_load(config: ModelConfig) -> list[Path] | str:
    """The weight files loading `config` reads, or why they cannot be known (a sentence).

    A hub id is looked up in the local Hugging Face cache only: the components model_index.json
    names, in the configured `variant` (fp16) where the cache has it, as a folder would be.
    """
    try:
        source = model_source(config)
        options = config.parsed_options()
    except Exception as exc:  # a missing model fails clearly when it loads
        detail = exc.message if isinstance(exc, LocalimgError) else f"{type(exc).__name__}: {exc}"
        return f"its model cannot be resolved ({detail})"
    variant = str(options["variant"]) if options.get("variant") else None
    if source.kind == "hub":
        revision = str(options["revision"]) if options.get("revision") else None
        cached = cached_pipeline(source.location, revision)
        if isinstance(cached, str):
            return f"{cached}; nothing is downloaded for an estimate"
        return [path for folder in cached.model_folders for path in _weight_files(folder, variant)]
    if source.kind == "folder":
        return _weight_files(source.path, variant)
    # A ggml model's text encoders and VAE are files of their own, named by options.
    return backend_weight_files(config) or [source.path]


_TOLD: set[tuple[str, str]] = set()  # (model, reason) already logged at INFO


def _no_estimate(config: ModelConfig, why: str) -> None:
    """Say why the budget has no estimate for a model: at INFO once per model and reason (the
    budget asks before every load), at DEBUG after."""
    key = (config.name, why)
    level = logging.DEBUG if key in _TOLD else logging.INFO
    _TOLD.add(key)
    log.log(
        level,
        "memory budget: no estimate for model %r: %s; only the loaded-model count limits it",
        config.name,
        why,
    )


def process_rss(pid: int) -> int | None:
    """Resident memory of a process (Linux /proc; None elsewhere or if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def available_ram() -> int | None:
    """MemAvailable: what can be allocated without swapping (Linux; None elsewhere)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def release_free_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc's malloc_trim).

    Without the trim, memory freed by an in-process unload stays in the allocator's free lists
    and the RSS does not go down. CUDA's cached blocks go back after the collection too (torch
    only, and only if something imported it: this never loads torch itself).
    """
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
    trim_heap()


def cuda_allocated() -> int | None:
    """CUDA memory this process's tensors hold (all devices), or None when CUDA is not in use:
    torch not imported by now, no CUDA device, or CUDA never initialised (never imports torch)."""
    torch: Any = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if not torch.cuda.is_available() or not torch.cuda.is_initialized():
            return None
        return sum(int(torch.cuda.memory_allocated(i)) for i in range(torch.cuda.device_count()))
    except Exception:  # a broken driver must not break a scrape
        return None
