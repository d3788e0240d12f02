"""ESRGAN (RRDB) upscalers through stable-diffusion.cpp: native, no torch, tiled.

RealESRGAN_x4plus, RealESRGAN_x4plus_anime_6B, 4x-UltraSharp and the other RRDB models with 64
features and a 3-channel first convolution run on the binding's upscaler context, which reads
both key layouts (ESRGAN's `model.0`, `model.1.sub.N.RDBk.convj.0`, ... and basicsr's
`conv_first`, `body.N.rdbk.convj`, ..., wrapped in `params_ema` or not), detects the block count
and the scale itself, and keeps the weights in half precision. The image is cut into tiles of
`tile_size` pixels (a quarter overlapping), so memory stays bounded by the tile, not the image;
the library reports each tile through its progress callback.

The file is checked here first (`inspect_rrdb`): the library may crash on what it does not
expect, and a refusal must name what runs. RealESRGAN_x2plus's pixel-unshuffle variant
(12-channel first convolution) is an RRDB the library cannot run: spandrel runs it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localimg.backends.side.scaling import upscale_with_model
from localimg.backends.side.weight_keys import Shapes, UnreadableWeights, read_shapes
from localimg.errors import BackendError, BackendNotInstalled

if TYPE_CHECKING:
    from PIL import Image

TileProgress = Callable[[int, int], None]
FEATURES = 64
DEFAULT_TILE = 128
# The library's compute buffer for one tile: about six float32 activations of 64 features at the
# tile's output size (measured, bench/bench_upscale.py: 2048 x 2048 from 512 x 512 at x4 peaks
# 473 MiB over the loaded model, whatever the image size; a x2 model's tiles need a quarter).
WORK_ACTIVATIONS = 6
BYTES_PER_WEIGHT = 2  # the library converts the weights to f16 (measured: half the f32 file)
WRAPPERS = ("params_ema.", "params.", "state_dict.", "model.module.", "module.")
SUPPORTED = (
    "ESRGAN/RRDB models with 64 features and an RGB first convolution run natively "
    "(RealESRGAN_x4plus, RealESRGAN_x4plus_anime_6B, 4x-UltraSharp, ...); other architectures "
    "(SwinIR, HAT, DAT, SPAN, Real-ESRGAN compact, RealESRGAN_x2plus's pixel-unshuffle RRDB, ...) "
    "need spandrel: pip install 'localimg[upscale]'"
)
_OLD_BLOCK = re.compile(r"model\.1\.sub\.(\d+)\.RDB1\.conv1\.0\.weight")
_NEW_BLOCK = re.compile(r"body\.(\d+)\.rdb1\.conv1\.weight")
_OLD_CONV = re.compile(r"model\.(\d+)\.weight")


@dataclass(frozen=True)
class RrdbInfo:
    """What the checked file holds: its factor, block count and weight count."""

    scale: int
    blocks: int
    weights: int


class NotRunnable(ValueError):
    """The file is not a model stable-diffusion.cpp's upscaler runs (the message says why)."""


def _unwrapped(shapes: Shapes) -> Shapes:
    for prefix in WRAPPERS:
        if shapes and all(key.startswith(prefix) for key in shapes):
            return {key[len(prefix) :]: shape for key, shape in shapes.items()}
    return shapes


def _old_layout(shapes: Shapes) -> tuple[int, int, tuple[int, ...]]:
    blocks = len({m[1] for key in shapes if (m := _OLD_BLOCK.fullmatch(key))})
    convs = sorted(int(m[1]) for key in shapes if (m := _OLD_CONV.fullmatch(key)))
    last = convs[-1] if convs else 0
    ups = max(0, (last - 4) // 3)  # x2: model.3 up, .5 HR, .7 last; x4: .3, .6 up, .8, .10
    return 2**ups, blocks, shapes.get("model.0.weight", ())


def _new_layout(shapes: Shapes) -> tuple[int, int, tuple[int, ...]]:
    blocks = len({m[1] for key in shapes if (m := _NEW_BLOCK.fullmatch(key))})
    first = shapes.get("conv_first.weight", ())
    ups = sum(f"conv_up{i}.weight" in shapes for i in (1, 2, 3))
    return 2**ups, blocks, first


def inspect_rrdb(shapes: Shapes) -> RrdbInfo:
    """The factor and size of an RRDB model the library can run; NotRunnable saying why not."""
    shapes = _unwrapped(shapes)
    if "model.0.weight" in shapes:
        scale, blocks, first = _old_layout(shapes)
    elif "conv_first.weight" in shapes and any(_NEW_BLOCK.fullmatch(k) for k in shapes):
        scale, blocks, first = _new_layout(shapes)
    else:
        raise NotRunnable("it is not an ESRGAN/RRDB model")
    if blocks == 0:
        raise NotRunnable("it is not an ESRGAN/RRDB model (no residual dense blocks)")
    if len(first) != 4 or first[0] != FEATURES:
        raise NotRunnable(f"its RRDB has {first[0] if first else '?'} features, not {FEATURES}")
    if first[1] != 3:
        raise NotRunnable(
            f"its first convolution reads {first[1]} channels (a pixel-unshuffle RRDB such as "
            "RealESRGAN_x2plus), which stable-diffusion.cpp cannot run"
        )
    if scale not in (2, 4):
        raise NotRunnable(f"it is a x{scale} RRDB; stable-diffusion.cpp runs x2 and x4")
    weights = sum(_count(shape) for shape in shapes.values())
    return RrdbInfo(scale=scale, blocks=blocks, weights=weights)


def _count(shape: tuple[int, ...]) -> int:
    total = 1
    for n in shape:
        total *= n
    return total


def check_file(path: Path) -> RrdbInfo:
    """`inspect_rrdb` of a file; NotRunnable for an unreadable one too."""
    try:
        return inspect_rrdb(read_shapes(path))
    except UnreadableWeights as exc:
        raise NotRunnable(str(exc)) from None


class EsrganUpscaler:
    """An RRDB file in `upscale_models/` run by stable-diffusion.cpp: `run` is one pass of the
    model, `upscale` any scale around it (scaling.py)."""

    kind = "upscaler"
    where = "ram"

    def __init__(
        self, name: str, path: Path, info: RrdbInfo, threads: int = 0, tile: int = DEFAULT_TILE
    ) -> None:
        self.name = name
        self.path = path
        self.info = info
        self.threads = threads
        self.tile = tile
        self._sd: Any = None
        self._ctx: Any = None

    @property
    def factor(self) -> int:
        """The model's own factor (2 or 4)."""
        return self.info.scale

    @property
    def work_bytes(self) -> int:
        """One tile's compute buffer, which bounds what an upscale adds to the weights."""
        side = self.tile * self.factor
        return side * side * FEATURES * 4 * WORK_ACTIVATIONS

    @property
    def estimated_bytes(self) -> int:
        return self.info.weights * BYTES_PER_WEIGHT + self.work_bytes

    def load(self) -> None:
        try:
            from localimg.backends.ggml import native

            sd = native.install()
        except ImportError as exc:
            raise BackendNotInstalled(
                f"the ESRGAN upscaler {self.name!r} needs stable-diffusion.cpp ({exc}): "
                "pip install 'localimg[ggml]'"
            ) from None
        native.quiet_wrapper()
        threads = self.threads or max(1, int(sd.sd_get_num_physical_cores()))
        with native.NATIVE_LOCK, native.capturing() as lines, native.stdout_to_stderr():
            ctx = sd.new_upscaler_ctx(str(self.path).encode(), False, False, threads, self.tile)
        if not ctx:
            said = "; ".join(text for level, text in lines if level >= 3)[-400:]
            raise BackendError(
                f"stable-diffusion.cpp could not load the upscaler {self.path}"
                + (f": {said}" if said else "")
            )
        self._sd, self._ctx = sd, ctx
        found = int(sd.get_upscale_factor(ctx))  # the library's own reading of the file wins
        if found > 0 and found != self.info.scale:
            self.info = replace(self.info, scale=found)

    def unload(self) -> None:
        ctx, self._ctx = self._ctx, None
        if ctx:
            from localimg.backends.ggml import native

            with native.NATIVE_LOCK:
                self._sd.free_upscaler_ctx(ctx)

    def upscale(
        self, image: Image.Image, scale: float, progress: TileProgress | None = None
    ) -> Image.Image:
        """`image` times `scale`: model passes, then lanczos to the exact size (scaling.py)."""
        return upscale_with_model(image, scale, self.factor, self.run, self.tile, progress)

    def run(self, image: Image.Image, progress: TileProgress | None = None) -> Image.Image:
        """One pass of the model: `image` (RGB) times its factor."""
        from PIL import Image

        from localimg.backends.ggml import native

        if not self._ctx:
            raise RuntimeError(f"the upscaler {self.name!r} is not loaded")
        sd = self._sd
        rgb = image.convert("RGB")
        data = rgb.tobytes()
        buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        pointer = ctypes.cast(buffer, ctypes.POINTER(ctypes.c_uint8))
        source = sd.sd_image_t(width=rgb.width, height=rgb.height, channel=3, data=pointer)
        with native.NATIVE_LOCK, native.progress_to(progress or _ignore):
            try:
                with native.stdout_to_stderr():
                    out = sd.upscale(self._ctx, source, self.factor)
            finally:
                native.reset_progress(sd)
        if not out.data:
            raise BackendError(f"stable-diffusion.cpp returned no image from {self.name!r}")
        try:
            size = out.width * out.height * out.channel
            pixels = ctypes.string_at(out.data, size)
            mode = {1: "L", 3: "RGB", 4: "RGBA"}[out.channel]
            return Image.frombytes(mode, (out.width, out.height), pixels).convert("RGB")
        finally:
            native.free_c_buffer(ctypes.cast(out.data, ctypes.c_void_p).value)


def _ignore(done: int, total: int) -> None:
    """No one listens to the tiles."""
