"""Loading a model in half precision without a float32 copy alive: safetensors read tensor by
tensor.

diffusers reads a whole checkpoint file into one state dict (memory-mapped) and then casts each
tensor to the target dtype: until the last tensor is cast, every page of the float32 file it
touched stays resident beside the half-precision copies, so a float32 file loaded as bfloat16
peaked higher than loading it as float32 (5.9 GB against 4.5 GB for SD1.5-size weights). Here
the state dict is a mapping that reads each tensor from the file when it is asked for (plain
reads into memory the tensor owns, not a mapping of the file), so once diffusers has cast it the
float32 tensor is freed: the peak is the half-precision weights plus one tensor.

It replaces diffusers' `load_state_dict` (in the two modules that call it) for `.safetensors`
files only while a half-precision load runs (`streaming()`); everything else, and every other
file type, goes to diffusers' own function. The tensors are the same either way.
"""

from __future__ import annotations

import json
import struct
import threading
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from localimg._util.system import trim_heap

# safetensors' dtype names → torch's.
TORCH_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
}
# The modules whose `load_state_dict` reads a checkpoint for from_pretrained (diffusers 0.3x-0.4x):
# modeling_utils for a single file, model_loading_utils for each shard.
PATCHED_MODULES = ("diffusers.models.modeling_utils", "diffusers.models.model_loading_utils")
# transformers 5 opens safetensors lazily itself, memory-mapped (`backend="mmap"`) except on
# Windows and MPS, where it reads with pread; while streaming, its CPU loads read with pread too.
TRANSFORMERS_LOADER = "transformers.modeling_utils"

_lock = threading.Lock()
_active = 0  # loads in progress that want streaming (a count: loads may overlap on threads)


class StreamedSafetensors(MutableMapping[str, Any]):
    """A safetensors file as a state dict whose tensors are read when asked for.

    Keys set or deleted by the caller (diffusers renames old attention keys) are kept apart from
    the file; reading a key twice reads it twice, which diffusers' loading never does."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with self.path.open("rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            header: dict[str, Any] = json.loads(handle.read(size))
        header.pop("__metadata__", None)
        self._start = 8 + size
        self._entries = {name: entry for name, entry in header.items()}
        self._set: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        if key in self._set:
            return self._set[key]
        entry = self._entries[key]
        return self._read(entry)

    def _read(self, entry: dict[str, Any]) -> Any:
        import mmap

        import torch

        begin, end = entry["data_offsets"]
        dtype = getattr(torch, TORCH_DTYPES[entry["dtype"]])
        if end == begin:
            return torch.empty(entry["shape"], dtype=dtype)
        buffer = mmap.mmap(-1, end - begin)
        with self.path.open("rb", buffering=0) as handle:
            handle.seek(self._start + begin)
            with memoryview(buffer) as view:
                done = 0
                while done < len(view):
                    got = handle.readinto(view[done:])
                    if not got:
                        raise OSError(f"{self.path} is truncated")
                    done += got
        _note_read(end - begin)
        raw = torch.frombuffer(buffer, dtype=torch.uint8)
        return raw.view(dtype).reshape(entry["shape"])

    def __setitem__(self, key: str, value: Any) -> None:
        self._entries.pop(key, None)
        self._set[key] = value

    def __delitem__(self, key: str) -> None:
        if key in self._set:
            del self._set[key]
        else:
            del self._entries[key]

    def __iter__(self) -> Iterator[str]:
        yield from list(self._entries)
        yield from list(self._set)

    def __len__(self) -> int:
        return len(self._entries) + len(self._set)

    def __contains__(self, key: object) -> bool:
        return key in self._entries or key in self._set


TRIM_EVERY = 256 * 2**20  # bytes read between two returns of freed heap memory to the system
_since_trim = 0


def _note_read(size: int) -> None:
    """Count bytes read; past TRIM_EVERY, give the heap's free memory back (release_heap)."""
    global _since_trim
    _since_trim += size
    if _since_trim >= TRIM_EVERY:
        _since_trim = 0
        release_heap()


def release_heap() -> None:
    """glibc keeps freed mid-size blocks (transformers' float32 tensors, once cast) in its heap,
    counted in the process's memory: hand them back (_util/system.trim_heap)."""
    trim_heap()


def _wrap(original: Any) -> Any:
    def load_state_dict(checkpoint_file: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(checkpoint_file, MutableMapping):
            return checkpoint_file  # already a state dict (diffusers passes dicts through too)
        disable_mmap = kwargs.get("disable_mmap", args[0] if args else False)
        map_location = kwargs.get("map_location", args[1] if len(args) > 1 else "cpu")
        wanted = _active > 0 and not disable_mmap and str(map_location) == "cpu"
        if wanted and str(checkpoint_file).endswith(".safetensors"):
            return StreamedSafetensors(checkpoint_file)
        return original(checkpoint_file, *args, **kwargs)

    load_state_dict.streamed_original = original  # type: ignore[attr-defined]
    return load_state_dict


def _pread_open(original: Any) -> Any:
    def safe_open(*args: Any, **kwargs: Any) -> Any:
        if _active > 0 and kwargs.get("backend") == "mmap" and kwargs.get("device") == "cpu":
            kwargs["backend"] = "pread"
        return original(*args, **kwargs)

    safe_open.streamed_original = original  # type: ignore[attr-defined]
    return safe_open


def _install_transformers() -> None:
    import importlib.util

    if importlib.util.find_spec("transformers") is None:
        return
    import importlib

    module = importlib.import_module(TRANSFORMERS_LOADER)
    current = getattr(module, "safe_open", None)
    if callable(current) and not hasattr(current, "streamed_original"):
        setattr(module, "safe_open", _pread_open(current))  # noqa: B010 (a library module)


def install() -> bool:
    """Put the streaming reader in front of diffusers' (once); False where this diffusers does
    not have the function where it is expected (then loading is diffusers' own, unchanged)."""
    import importlib

    with _lock:
        modules = [importlib.import_module(name) for name in PATCHED_MODULES]
        if not all(callable(getattr(module, "load_state_dict", None)) for module in modules):
            return False
        for module in modules:
            current = getattr(module, "load_state_dict")  # noqa: B009 (a library module)
            if not hasattr(current, "streamed_original"):
                setattr(module, "load_state_dict", _wrap(current))  # noqa: B010
        _install_transformers()
    return True


@contextmanager
def streaming(enabled: bool) -> Iterator[None]:
    """Stream safetensors files while the block loads, when `enabled` (a half-precision load)."""
    global _active
    if not enabled or not install():
        yield
        return
    with _lock:
        _active += 1
        if _active == 1:
            _serial_transformers(True)
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0:
                _serial_transformers(False)
        release_heap()


# transformers 5 reads and casts up to four tensors at once on a thread pool unless this variable
# is set: each thread's malloc arena then keeps the float32 tensors' freed memory, and the peak
# holds four float32 tensors. While streaming they are read one at a time, in the loading thread.
SERIAL_LOAD_VARIABLE = "HF_DEACTIVATE_ASYNC_LOAD"
_saved_serial: list[str | None] = []


def _serial_transformers(on: bool) -> None:
    import os

    if on:
        _saved_serial.append(os.environ.get(SERIAL_LOAD_VARIABLE))
        os.environ[SERIAL_LOAD_VARIABLE] = "1"
        return
    previous = _saved_serial.pop() if _saved_serial else None
    if previous is None:
        os.environ.pop(SERIAL_LOAD_VARIABLE, None)
    else:
        os.environ[SERIAL_LOAD_VARIABLE] = previous
