"""The model families the bundled stable-diffusion.cpp cannot load, told from a file's tensor
names before the library sees the file, and the same families by gallery slug for the install.

stable-diffusion-cpp-python 0.4.7 vendors a stable-diffusion.cpp that knows, among the families
of 2026, ERNIE-Image, Anima, Z-Image (Turbo and base: one network), Qwen-Image (2512 is the same
network), Ovis-Image, FLUX.2 and Wan (its `Version:` names). Given a file of a newer family it
does something worse than refusing: a Qwen-Image-Layered file has Qwen-Image's tensor names and
loads as Qwen-Image with its extra layers dropped; a Z-Image-Omni file loads as Z-Image without
its SigLIP image branch; a Krea 2, Ideogram 4, Qwen-Image 2 or LTX-2 file matches no family, or
a wrong one, and fails deep in the loader. So each of them is recognised here from a tensor name
only it has (upstream stable-diffusion.cpp's own markers where it later added the family, else
the diffusers converter's) and refused naming what runs it: the diffusers backend and its
gallery entry.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

HEADER_LIMIT = 100 * 2**20  # a safetensors header larger than this is not a weight file


@dataclass(frozen=True)
class Unloadable:
    """A family the bundled stable-diffusion.cpp cannot load, and what runs it instead."""

    slug: str  # the gallery's `family:` value
    label: str
    markers: tuple[str, ...]  # a tensor name containing one of these is this family's
    pipeline: str  # the diffusers pipeline class that runs it
    entry: str | None  # the diffusers gallery entry, when the gallery ships one

    def advice(self) -> str:
        """What to use instead, in the words of the error messages."""
        where = f"install the gallery entry {self.entry!r}, or " if self.entry else ""
        return (
            f"run it on the diffusers backend ({where}write a YAML with backend: diffusers and "
            f"diffusers: pipeline_type: {self.pipeline})"
        )


UNLOADABLE = (
    Unloadable(
        "krea-2",
        "Krea 2",
        ("txtfusion.projector.weight", "text_fusion.projector.weight"),
        "Krea2Pipeline",
        "krea-2",
    ),
    Unloadable(
        "ideogram-4",
        "Ideogram 4",
        ("embed_image_indicator.weight",),
        "Ideogram4Pipeline",
        "ideogram-4",
    ),
    Unloadable(
        "qwen-image-layered",
        "Qwen-Image-Layered",
        ("time_text_embed.addition_t_embedding.weight",),
        "QwenImageLayeredPipeline",
        "qwen-image-layered",
    ),
    Unloadable(
        "qwen-image-2",
        "Qwen-Image 2",
        ("txt_in.text_norm.weight",),
        "QwenImage21Pipeline",
        "qwen-image-2",
    ),
    Unloadable(
        "z-image-omni",
        "Z-Image-Omni",
        ("siglip_embedder.", "siglip_refiner.", "siglip_pad_token"),
        "ZImageOmniPipeline",
        None,
    ),
    Unloadable(
        "ltx-2",
        "LTX-2",
        (
            "audio_patchify_proj.",
            "audio_proj_in.",
            "av_ca_a2v_gate_adaln_single.",
            "av_cross_attn_video_a2v_gate.",
        ),
        "LTX2Pipeline",
        "ltx-2",
    ),
)
BY_SLUG = {family.slug: family for family in UNLOADABLE}
# The 2026 gallery families this engine loads (the rest of the gallery predates `family:`).
LOADABLE_SLUGS = ("ernie-image", "anima", "z-image", "qwen-image-2512")
ERNIE_MARKER = "layers.0.adaLN_sa_ln.weight"  # stable-diffusion.cpp's own test for ERNIE-Image


class UnreadableHeader(ValueError):
    """The file's header cannot be read as safetensors or GGUF."""


def tensor_names(path: Path) -> list[str]:
    """The tensor names in a safetensors or GGUF file's header (no tensor data is read); an
    empty list for other formats, which this check leaves to the library. The format is read
    from the file's first bytes, as stable-diffusion.cpp does, not from its name: a safetensors
    file named `.gguf` loads there."""
    with path.open("rb") as handle:
        head = handle.read(9)
    if head[:4] == b"GGUF":
        return _gguf_names(path)
    if head[8:9] == b"{" or path.suffix.lower() in (".safetensors", ".sft"):
        return _safetensors_names(path)
    if path.suffix.lower() == ".gguf":
        raise UnreadableHeader(f"{path.name} is neither a GGUF nor a safetensors file")
    return []


def _safetensors_names(path: Path) -> list[str]:
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise UnreadableHeader(f"{path.name} is too short to be a .safetensors file")
        (size,) = struct.unpack("<Q", head)
        if size > HEADER_LIMIT:
            raise UnreadableHeader(f"{path.name}: a {size}-byte header is not a safetensors one")
        try:
            header = json.loads(handle.read(size))
        except ValueError as exc:
            raise UnreadableHeader(f"{path.name}: its safetensors header is not JSON") from exc
    if not isinstance(header, dict):
        raise UnreadableHeader(f"{path.name}: its safetensors header is not a table")
    return [name for name in header if name != "__metadata__"]


# GGUF metadata value types with a fixed size (gguf.md: GGUFValueType), by type id.
_GGUF_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


class _GgufHeader:
    """Reads a GGUF header field by field from an open file."""

    def __init__(self, path: Path, handle: BinaryIO) -> None:
        self.path, self.handle = path, handle

    def take(self, size: int) -> bytes:
        data = self.handle.read(size)
        if len(data) != size:
            raise UnreadableHeader(f"{self.path.name}: its GGUF header ends early")
        return data

    def number(self, fmt: str) -> int:
        return int(struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0])

    def text(self) -> str:
        size = self.number("<Q")
        if size > HEADER_LIMIT:
            raise UnreadableHeader(f"{self.path.name}: a {size}-byte GGUF string")
        return self.take(size).decode("utf-8", "replace")

    def skip(self, kind: int) -> None:
        """Step over one metadata value of type `kind`."""
        if kind in _GGUF_SIZES:
            self.handle.seek(_GGUF_SIZES[kind], 1)
        elif kind == _GGUF_STRING:
            self.handle.seek(self.number("<Q"), 1)
        elif kind == _GGUF_ARRAY:
            inner, count = self.number("<I"), self.number("<Q")
            if inner in _GGUF_SIZES:
                self.handle.seek(_GGUF_SIZES[inner] * count, 1)
            else:
                for _ in range(count):
                    self.skip(inner)
        else:
            raise UnreadableHeader(f"{self.path.name}: unknown GGUF value type {kind}")


def _gguf_names(path: Path) -> list[str]:
    """The tensor names of a GGUF v2/v3 file: its metadata is skipped, nothing is checked beyond
    the layout (the library itself accepts files gguf-py's reader refuses)."""
    with path.open("rb") as handle:
        header = _GgufHeader(path, handle)
        if header.take(4) != b"GGUF":
            raise UnreadableHeader(f"{path.name} is not a GGUF file")
        if header.number("<I") < 2:
            return []  # GGUF v1 (32-bit counts): left to the library
        tensors, entries = header.number("<Q"), header.number("<Q")
        for _ in range(entries):
            header.text()
            header.skip(header.number("<I"))
        names = []
        for _ in range(tensors):
            names.append(header.text())
            handle.seek(8 * header.number("<I") + 4 + 8, 1)  # dimensions, type, offset
        return names


def unloadable_family(names: list[str]) -> tuple[Unloadable, str] | None:
    """The family the bundled library cannot load that these tensor names belong to, with the
    name that shows it; None for anything else."""
    for name in names:
        for family in UNLOADABLE:
            if any(marker in name for marker in family.markers):
                return family, name
    return None


def is_ernie_image(names: list[str]) -> bool:
    return any(name.endswith(ERNIE_MARKER) for name in names)
