"""Random ESRGAN (RRDB) upscaler files in the old key layout stable-diffusion.cpp reads.

`model.0` is the first convolution, `model.1.sub.N.RDBk.convj.0` the residual dense blocks,
`model.1.sub.<blocks>` the trunk convolution, then one upsampling convolution per factor of two
and the two last convolutions. 64 features like every real ESRGAN file, any number of blocks
(1 for tests, 23 for a full-size RealESRGAN_x4plus stand-in in the benchmark). The weights are
small random numbers, so the output is a real, deterministic image that differs from lanczos's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.tiny_models import build_lock, cache_dir

VERSION = "1"
FEATURES = 64
GROWTH = 32


def rrdb_shapes(scale: int, blocks: int) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape, in the old ESRGAN layout, for a x`scale` model (1, 2 or 4)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(key: str, out: int, inp: int) -> None:
        shapes[f"{key}.weight"] = (out, inp, 3, 3)
        shapes[f"{key}.bias"] = (out,)

    conv("model.0", FEATURES, 3)
    for block in range(blocks):
        for rdb in (1, 2, 3):
            for j in range(1, 6):
                out = FEATURES if j == 5 else GROWTH
                conv(f"model.1.sub.{block}.RDB{rdb}.conv{j}.0", out, FEATURES + (j - 1) * GROWTH)
    conv(f"model.1.sub.{blocks}", FEATURES, FEATURES)
    ups = {1: 0, 2: 1, 4: 2}[scale]
    index = 3
    for _ in range(ups):
        conv(f"model.{index}", FEATURES, FEATURES)
        index += 3
    conv(f"model.{index - 1 if ups else index}", FEATURES, FEATURES)
    conv(f"model.{index + 1 if ups else index + 2}", 3, FEATURES)
    return shapes


def rrdb_tensors(scale: int, blocks: int, seed: int = 0) -> dict[str, Any]:
    """Random float32 weights of a x`scale` RRDB model (numpy arrays)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    tensors: dict[str, Any] = {}
    for key, shape in rrdb_shapes(scale, blocks).items():
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        std = 0.5 / np.sqrt(fan_in) if len(shape) > 1 else 0.01
        tensors[key] = (rng.standard_normal(shape) * std).astype(np.float32)
    return tensors


def write_esrgan(path: Path, scale: int, blocks: int = 1, seed: int = 0) -> Path:
    """Write a random RRDB file: `.safetensors` with numpy, `.pth` with torch."""
    tensors = rrdb_tensors(scale, blocks, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".safetensors":
        from safetensors.numpy import save_file

        save_file(tensors, str(tmp))
    else:
        import torch

        torch.save({k: torch.from_numpy(v) for k, v in tensors.items()}, str(tmp))
    tmp.replace(path)
    return path


def tiny_esrgan(scale: int, suffix: str = ".safetensors") -> Path:
    """The cached 1-block x`scale` file (built once, under the shared build lock)."""
    path = cache_dir() / f"tiny-esrgan-v{VERSION}" / f"tiny-x{scale}{suffix}"
    with build_lock():
        if not path.is_file():
            write_esrgan(path, scale, blocks=1, seed=scale)
    return path


def not_rrdb(path: Path) -> Path:
    """A safetensors file that is no upscaler (a SwinIR-like layout) to be refused."""
    import numpy as np
    from safetensors.numpy import save_file

    tensors = {
        "conv_first.weight": np.zeros((60, 3, 3, 3), np.float32),
        "layers.0.residual_group.blocks.0.attn.qkv.weight": np.zeros((180, 60), np.float32),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


def write_unshuffle_x2(path: Path, blocks: int = 1, seed: int = 5) -> Path:
    """A RealESRGAN_x2plus-shaped file (basicsr layout: a pixel-unshuffled 12-channel input,
    then a x4 RRDB), which stable-diffusion.cpp cannot run and spandrel can."""
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    shapes: dict[str, tuple[int, ...]] = {"conv_first": (FEATURES, 12, 3, 3)}
    for block in range(blocks):
        for rdb in (1, 2, 3):
            for j in range(1, 6):
                out = FEATURES if j == 5 else GROWTH
                key = f"body.{block}.rdb{rdb}.conv{j}"
                shapes[key] = (out, FEATURES + (j - 1) * GROWTH, 3, 3)
    for key in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        shapes[key] = (FEATURES, FEATURES, 3, 3)
    shapes["conv_last"] = (3, FEATURES, 3, 3)
    tensors: dict[str, Any] = {}
    for key, shape in shapes.items():
        std = 0.5 / np.sqrt(np.prod(shape[1:]))
        tensors[f"{key}.weight"] = (rng.standard_normal(shape) * std).astype(np.float32)
        tensors[f"{key}.bias"] = np.zeros(shape[0], np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path
