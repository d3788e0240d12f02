"""The one writer of random-weight checkpoints for stable-diffusion.cpp: safetensors and GGUF.

stable-diffusion.cpp recognises a model from its tensor names and reads some sizes from the
tensors, so a test checkpoint is a dict of named arrays drawn from a fixed random stream (the
files are the same on every machine). Both builders use it: the SD1 tiny UNet (tiny_ggml.py) and
the 2025-26 families (tiny_ggml_families.py). Files appear atomically (a temporary name, then a
rename), so a test killed half-way never leaves a truncated checkpoint in the cache.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

Tensors = dict[str, np.ndarray]
GGML_F32, GGML_F16, GGML_Q4_0 = 0, 1, 2  # ggml's type ids, as a GGUF tensor info names them


class Writer:
    """Collects f16 tensors from a fixed random stream (the layouts' usual initialisations).

    Linears have no bias unless asked (BFL's FLUX format has none; the SD1 layers ask)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.tensors: Tensors = {}

    def normal(self, name: str, shape: tuple[int, ...], std: float) -> None:
        data = self.rng.standard_normal(size=shape, dtype=np.float32)
        data *= np.float32(std)
        self.tensors[name] = data.astype(np.float16)

    def const(self, name: str, shape: tuple[int, ...], value: float) -> None:
        self.tensors[name] = np.full(shape, value, dtype=np.float16)

    def linear(
        self, name: str, n_in: int, n_out: int, bias: bool = False, gain: float = 1.0
    ) -> None:
        self.normal(f"{name}.weight", (n_out, n_in), gain * n_in**-0.5)
        if bias:
            self.const(f"{name}.bias", (n_out,), 0.0)

    def conv(
        self,
        name: str,
        n_in: int,
        n_out: int,
        k: int = 3,
        bias: bool = True,
        gain: float = 1.0,
    ) -> None:
        self.normal(f"{name}.weight", (n_out, n_in, k, k), gain * (n_in * k * k) ** -0.5)
        if bias:
            self.const(f"{name}.bias", (n_out,), 0.0)

    def norm(self, name: str, channels: int, bias: bool = True) -> None:
        self.const(f"{name}.weight", (channels,), 1.0)
        if bias:
            self.const(f"{name}.bias", (channels,), 0.0)


def temporary(path: Path) -> Path:
    """A hidden sibling name unique to this process, renamed onto `path` when complete."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def save_safetensors(tensors: Tensors, path: Path) -> None:
    from safetensors.numpy import save_file

    tmp = temporary(path)
    save_file(tensors, str(tmp))
    os.replace(tmp, path)


def build(path: Path, fill: Callable[[Writer], None], seed: int) -> Path:
    """`path`, written from `fill`'s tensors on first use (the cache: later calls only return)."""
    from tests.support.tiny_models import build_lock

    with build_lock():
        if not path.exists():
            writer = Writer(seed)
            fill(writer)
            save_safetensors(writer.tensors, path)
    return path


# -- GGUF (quantized) ------------------------------------------------------------------------------


def clip_l_text(w: Writer, prefix: str) -> None:
    """CLIP ViT-L/14's text encoder under `prefix` (SD1 checkpoints and FLUX's clip_l file name it
    differently): width 768, 12 layers, 12 heads, MLP 3072, 49408 tokens, fixed by clip.hpp."""
    w.normal(f"{prefix}.embeddings.token_embedding.weight", (49408, 768), 0.02)
    w.normal(f"{prefix}.embeddings.position_embedding.weight", (77, 768), 0.01)
    for layer in range(12):
        base = f"{prefix}.encoder.layers.{layer}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            w.linear(f"{base}.self_attn.{proj}", 768, 768, bias=True)
        w.norm(f"{base}.layer_norm1", 768)
        w.norm(f"{base}.layer_norm2", 768)
        w.linear(f"{base}.mlp.fc1", 768, 3072, bias=True)
        w.linear(f"{base}.mlp.fc2", 3072, 768, bias=True)
    w.norm(f"{prefix}.final_layer_norm", 768)


def q4_0(data: np.ndarray) -> bytes:
    """ggml's reference Q4_0: blocks of 32 as an f16 scale and 16 bytes of 4-bit values."""
    blocks = data.astype(np.float32).reshape(-1, 32)
    index = np.abs(blocks).argmax(axis=1)
    peak = blocks[np.arange(len(blocks)), index]
    scale = peak / -8.0
    inverse = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale != 0)
    quant = np.minimum(15, (blocks * inverse[:, None] + 8.5).astype(np.int8)).astype(np.uint8)
    packed = quant[:, :16] | (quant[:, 16:] << 4)
    out = np.empty((len(blocks), 18), dtype=np.uint8)
    out[:, :2] = scale.astype(np.float16).view(np.uint8).reshape(-1, 2)
    out[:, 2:] = packed
    return out.tobytes()


class GgufFile:
    """A minimal GGUF v3 writer (no metadata; what stable-diffusion.cpp's loader reads)."""

    def __init__(self) -> None:
        self.tensors: list[tuple[str, tuple[int, ...], int, bytes]] = []

    def add(self, name: str, shape: tuple[int, ...], kind: int, data: bytes) -> None:
        self.tensors.append((name, shape, kind, data))

    def write(self, path: Path) -> None:
        def text(value: str) -> bytes:
            raw = value.encode()
            return struct.pack("<Q", len(raw)) + raw

        header = b"GGUF" + struct.pack("<IQQ", 3, len(self.tensors), 0)
        infos, offset = [], 0
        for name, shape, kind, data in self.tensors:
            dims = tuple(reversed(shape))  # ggml's ne: innermost first
            infos.append(
                text(name)
                + struct.pack("<I", len(dims))
                + struct.pack(f"<{len(dims)}Q", *dims)
                + struct.pack("<IQ", kind, offset)
            )
            offset += -(-len(data) // 32) * 32
        tmp = temporary(path)
        with tmp.open("wb") as out:
            out.write(header + b"".join(infos))
            out.write(b"\0" * (-out.tell() % 32))
            for _, _, _, data in self.tensors:
                out.write(data)
                out.write(b"\0" * (-len(data) % 32))
        os.replace(tmp, path)


class Q4Writer:
    """Random q4_0 linears (f32 biases and norms) into a GgufFile, drawn in row chunks.

    Linears have a bias unless told (the Qwen layers written this way mostly do)."""

    def __init__(self, file: GgufFile, seed: int) -> None:
        self.file, self.rng = file, np.random.default_rng(seed)

    def matrix(self, name: str, rows: int, cols: int, std: float) -> None:
        parts = []
        for start in range(0, rows, 4096):
            count = min(4096, rows - start)
            chunk = self.rng.standard_normal((count, cols), dtype=np.float32) * np.float32(std)
            parts.append(q4_0(chunk))
        self.file.add(name, (rows, cols), GGML_Q4_0, b"".join(parts))

    def linear(
        self, name: str, n_in: int, n_out: int, bias: bool = True, gain: float = 1.0
    ) -> None:
        self.matrix(f"{name}.weight", n_out, n_in, gain * n_in**-0.5)
        if bias:
            self.const(f"{name}.bias", (n_out,), 0.0)

    def const(self, name: str, shape: tuple[int, ...], value: float) -> None:
        self.file.add(name, shape, GGML_F32, np.full(shape, value, np.float32).tobytes())
