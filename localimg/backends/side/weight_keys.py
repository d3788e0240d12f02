"""The tensor names and shapes of a weight file, read without torch and without its data.

An upscaler file is checked before a native library sees it (stable-diffusion.cpp may crash on a
file it does not expect), and its memory is estimated from its shapes. `.safetensors` keeps them
in a JSON header; a torch `.pth`/`.pt`/`.ckpt` keeps them in a pickle, which is read here with
an unpickler that builds nothing: it knows only the few names a state dict uses (tensors,
storages, ordered dicts) and refuses any other, so no code in the file runs.
"""

from __future__ import annotations

import json
import pickle
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

Shapes = dict[str, tuple[int, ...]]
HEADER_LIMIT = 100 * 2**20  # a safetensors header larger than this is not a weight file
PICKLE_LIMIT = 64 * 2**20  # a state dict's pickle, without its data, is a few hundred KB


class UnreadableWeights(ValueError):
    """The file is not a safetensors or torch weight file (or holds no tensors)."""


class _Tensor:
    """What a tensor is in the pickle: its shape (the data stays in the file)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = tuple(int(n) for n in shape)


class _Stub:
    """A storage type, or any other allowed class: a name with no behaviour."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _rebuild_tensor(storage: Any, offset: int, size: tuple[int, ...], *args: Any) -> _Tensor:
    return _Tensor(tuple(size))


def _rebuild_parameter(data: Any, *args: Any) -> Any:
    return data


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): OrderedDict,
    ("torch.nn.modules.container", "ParameterDict"): dict,
}


class _ShapeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED.get((module, name))
        if allowed is not None:
            return allowed
        if module == "torch" and name.endswith("Storage"):
            return _Stub
        raise UnreadableWeights(f"the file's pickle names {module}.{name}, not a state dict")

    def persistent_load(self, pid: Any) -> Any:
        return _Stub(pid)  # a storage: its data is never read


def _unpickle(data: bytes) -> Any:
    import io

    stream = io.BytesIO(data)
    unpickler = _ShapeUnpickler(stream)
    first = unpickler.load()
    if isinstance(first, int) and not isinstance(first, bool):  # torch's legacy format:
        unpickler.load()  # the protocol version
        unpickler.load()  # the system info
        return unpickler.load()
    return first


def _torch_object(path: Path) -> Any:
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
            if name is None:
                raise UnreadableWeights("a zip archive without a torch data.pkl")
            if archive.getinfo(name).file_size > PICKLE_LIMIT:
                raise UnreadableWeights("its pickle is too large for a state dict")
            return _unpickle(archive.read(name))
    with path.open("rb") as handle:
        return _unpickle(handle.read(PICKLE_LIMIT))


def _flatten(obj: Any, prefix: str = "") -> Shapes:
    shapes: Shapes = {}
    if isinstance(obj, dict):
        for key, value in obj.items():
            if isinstance(value, _Tensor):
                shapes[f"{prefix}{key}"] = value.shape
            elif isinstance(value, dict):
                shapes.update(_flatten(value, f"{prefix}{key}."))
    return shapes


def torch_shapes(path: Path) -> Shapes:
    """Each tensor's dotted name and shape in a torch file (nested dicts joined with dots)."""
    try:
        obj = _torch_object(path)
    except UnreadableWeights:
        raise
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, TypeError) as exc:
        raise UnreadableWeights(f"not a torch weight file ({type(exc).__name__})") from None
    return _flatten(obj)


def safetensors_shapes(path: Path) -> Shapes:
    """Each tensor's name and shape from a safetensors header."""
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise UnreadableWeights("too short for a safetensors file")
        (length,) = struct.unpack("<Q", head)
        if length > HEADER_LIMIT:
            raise UnreadableWeights("not a safetensors file (its header size is absurd)")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise UnreadableWeights("not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise UnreadableWeights("not a safetensors file")
    return {
        str(key): tuple(int(n) for n in value.get("shape", ()))
        for key, value in header.items()
        if key != "__metadata__" and isinstance(value, dict)
    }


def read_shapes(path: Path) -> Shapes:
    """The tensors of `path` by name; UnreadableWeights when it holds none."""
    try:
        if path.suffix.lower() == ".safetensors":
            shapes = safetensors_shapes(path)
        else:
            shapes = torch_shapes(path)
    except OSError as exc:
        raise UnreadableWeights(f"cannot be read ({exc.strerror or exc})") from None
    if not shapes:
        raise UnreadableWeights("holds no tensors")
    return shapes
