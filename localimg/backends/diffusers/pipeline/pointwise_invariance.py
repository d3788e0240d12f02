"""Element-wise operations that give each image of a batch the bits it gets alone, on the CPU.

torch's CPU kernels for element-wise operations (SiLU, GELU, exp, sin, ...) run a vectorised loop
that takes two SIMD registers of elements at a time and finishes the remainder with scalar code,
and both round some results differently. Where the remainder falls depends on how many elements
one loop sees: the whole tensor, or one thread's share of it when it is larger than torch's grain
(32768 elements). A lone image's tensor of n elements and a batch's tensor of N*n put the scalar
remainder on different elements unless every boundary is a multiple of the register pair. That
pair is 2 x 16 float32 elements with AVX-512 and 2 x 8 with AVX2, so a width such as 48 (a multiple
of 16, not of 32) keeps batches bit-identical under AVX2 and not under AVX-512.

During a batched call (and only on the CPU) `PointwiseRegrouping` intercepts every ATen operation
tagged pointwise. When the lone call's and the batched call's loops are not both made of whole
register pairs (`lanes_aligned`), it runs the operation once per image on that image's rows,
laid out as the lone call lays them out, and puts the results back together; otherwise the
operation runs batched as usual. Models whose widths are multiples of 64 (the real ones) take the
fast path nearly always; tiny test models and odd sequence lengths take the per-image one.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

# Elements per iteration of torch's unrolled vector loop at its widest: 2 registers of 32 bfloat16
# or float16 values with AVX-512 (float32 takes 2 x 16, float64 2 x 8; AVX2 halves each).
_VECTOR_PAIR = 64
# at::internal::GRAIN_SIZE: tensors up to this many elements run on one thread.
_GRAIN = 32768
# Operations whose every result is correctly rounded (IEEE arithmetic, comparisons, selection):
# the scalar and the vector code give the same bits, so where the remainder falls cannot matter.
# `add` and `sub` only without an alpha (alpha may be fused into a multiply-add in one path only).
_EXACT = frozenset(
    [
        "add",
        "sub",
        "rsub",
        "mul",
        "div",
        "neg",
        "abs",
        "eq",
        "ne",
        "lt",
        "le",
        "gt",
        "ge",
        "where",
        "clamp",
        "clamp_min",
        "clamp_max",
        "maximum",
        "minimum",
        "fill",
        "masked_fill",
        "copy",
        "relu",
        "threshold",
        "sign",
        "floor",
        "ceil",
        "trunc",
        "round",
        "sqrt",
        "logical_and",
        "logical_or",
        "logical_not",
        "logical_xor",
        "bitwise_and",
        "bitwise_or",
        "bitwise_not",
        "bitwise_xor",
        "isnan",
        "isinf",
    ]
)


def _thread_share(numel: int, threads: int) -> int:
    """How many elements the first thread's loop sees (at::parallel_for's chunking)."""
    if threads <= 1 or numel <= _GRAIN:
        return numel
    workers = min(threads, -(-numel // _GRAIN))
    return -(-numel // workers)


def lanes_aligned(numel: int, images: int, inner: int, simple: bool, threads: int) -> bool:
    """Whether a pointwise operation on `numel` elements (a batch of `images`) runs every element
    through the vector loop both batched and alone, so that the batch cannot change a bit.

    `simple`: every tensor argument is contiguous with the output's shape, so torch loops over
    the elements as one flat run; otherwise it loops row by row over the innermost dimension of
    `inner` elements, which must then be made of whole register pairs too.
    """
    if not simple and inner % _VECTOR_PAIR:
        return False
    for count in (numel // images, numel):
        if count % _VECTOR_PAIR or _thread_share(count, threads) % _VECTOR_PAIR:
            return False
    return True


class PointwiseRegrouping:
    """A TorchDispatchMode (built lazily: torch is imported only when a batch runs) that splits
    misaligned pointwise operations per image; see the module docstring."""

    def __init__(self, images: int) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        outer = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(
                self, func: Any, types: Any, args: Any = (), kwargs: Any = None
            ) -> Any:
                return outer.dispatch(func, args, kwargs or {})

        self.images = images
        self.mode = _Mode()

    def dispatch(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Every ATen call of the batched call comes here: keep the common case cheap."""
        import torch

        name = _pointwise_name(func)
        if name is None or _is_exact(name, kwargs):
            return func(*args, **kwargs)
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if not tensors or any(t.device.type != "cpu" for t in tensors):
            return func(*args, **kwargs)
        shape = torch.broadcast_shapes(*(t.shape for t in tensors))
        rows = shape[0] if len(shape) >= 2 else 0
        images = self.images
        # A batch holds each image's rows once (a text encoder, a transformer called per guidance
        # branch) or twice ([uncond x N, cond x N]); any other leading size is not per image (a
        # scheduler's 1000 alphas, a frequency table) and runs as the lone call runs it.
        if rows not in (images, 2 * images):
            return func(*args, **kwargs)
        numel = shape.numel()
        simple = all(t.shape == shape and t.is_contiguous() for t in tensors)
        threads = torch.get_num_threads()
        if lanes_aligned(numel, images, shape[-1], simple, threads):
            return func(*args, **kwargs)
        return self._per_image(func, args, kwargs, shape)

    def _per_image(
        self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], shape: Any
    ) -> Any:
        """Run `func` image by image on the rows the lone call holds (k groups of N images: image
        i's rows are i, N+i, ...), then interleave the results back into the batch's order."""
        import torch

        images = self.images
        rows = shape[0]
        groups = rows // images
        mutates = func._schema.is_mutable
        functional = _functional_of(func) if mutates else func
        if functional is None:
            return func(*args, **kwargs)

        def rows_of(value: Any, image: int) -> Any:
            if not isinstance(value, torch.Tensor) or value.dim() != len(shape):
                return value
            if value.shape[0] != rows:
                return value  # broadcast along the batch (size 1)
            if groups == 1:
                return value[image : image + 1]  # a view with the lone call's strides
            grouped = value.reshape(groups, images, *value.shape[1:])
            return grouped[:, image].contiguous()

        outputs = [functional(*(rows_of(a, i) for a in args), **kwargs) for i in range(images)]
        if groups == 1:
            result = torch.cat(outputs)
        else:
            joined = torch.stack(outputs, dim=1)  # (groups, images, ...)
            result = joined.reshape(rows, *joined.shape[2:])
        if mutates:
            target = args[0]
            target.copy_(result)
            return target
        return result

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        with self.mode:
            yield


@functools.cache
def _pointwise_name(func: Any) -> str | None:
    """An operation's name without its in-place underscore (aten.silu_ -> "silu") when torch tags
    it pointwise, else None; cached per overload, as it is asked for every call of a batch."""
    import torch

    if torch.Tag.pointwise not in func.tags:
        return None
    return str(func._schema.name).split("::")[-1].rstrip("_")


def _is_exact(name: str, kwargs: dict[str, Any]) -> bool:
    """Whether the pointwise operation `name` gives the same bits in torch's scalar and vector
    loops (see _EXACT)."""
    if name in ("add", "sub", "rsub") and kwargs.get("alpha", 1) != 1:
        return False
    return name in _EXACT


def _functional_of(func: Any) -> Any:
    """The out-of-place twin of an in-place pointwise overload (aten.silu_ -> aten.silu)."""
    import torch

    name = func._schema.name.split("::")[-1]
    if not name.endswith("_") or func._schema.overload_name.startswith("out"):
        return None
    packet = getattr(torch.ops.aten, name[:-1], None)
    if packet is None:
        return None
    return getattr(packet, func._overloadname, None)
