"""Make a batched diffusers call give each image the pixels it would get alone, bit for bit.

Batching (localimg/engine/batching.py) runs N queued requests as one pipeline call.
Convolutions, attention and normalisation compute each sample the same way at any batch size,
measured on the CPU with torch's kernels; three things do not:

- linear layers: the matrix library picks its kernel, and with it the order of the sums, from the
  number of rows. One image with classifier-free guidance feeds a UNet linear layer 2 samples
  ([uncond, cond]); a batch of N feeds it 2N ([uncond x N, cond x N]), and the products round
  differently (seen on SD1.5's shapes: 128 against 384 rows of width 1280);
- the VAE decoder's small convolutions, for a batch of 4 against a batch of 1;
- element-wise operations whose element count is not made of whole SIMD register pairs, which
  round their scalar remainder differently (pointwise_invariance.py: seen with AVX-512 on widths
  such as 48, which AVX2 loops cover exactly).

So during a batched call (and only then: a lone call runs the library's own code, at full speed)
each linear layer regroups its input into the lone call's shape, [uncond_i, cond_i] per image,
and multiplies group by group, the VAE decodes one image at a time, and on the CPU each
misaligned element-wise operation runs image by image. The rest of the batch (convolutions,
attention, aligned element-wise work: most of it) still runs batched. GPU libraries choose kernels
more freely; there a batched image may differ from a lone one by float rounding.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator
from typing import Any

from localimg.backends.diffusers.pipeline.pointwise_invariance import PointwiseRegrouping


class BatchGrouping:
    """How many images the running call holds; read by every patched linear layer."""

    def __init__(self) -> None:
        self.images = 1

    @contextlib.contextmanager
    def images_per_call(self, pipe: Any, images: int) -> Iterator[None]:
        """Group linear inputs per image and decode one image at a time for this call."""
        vae: Any = getattr(pipe, "vae", None)
        slicing = getattr(vae, "use_slicing", None)
        self.images = images
        if slicing is not None:
            vae.use_slicing = True
        on_cpu = str(getattr(pipe, "device", "cpu")).startswith("cpu")
        pointwise = (
            PointwiseRegrouping(images).active()
            if on_cpu and images > 1
            else contextlib.nullcontext()
        )
        try:
            with pointwise:
                yield
        finally:
            self.images = 1
            if slicing is not None:
                vae.use_slicing = slicing


def _grouped_linear(self: Any, x: Any) -> Any:
    """A linear layer that, in a batch of N images, multiplies each image's rows on their own.

    The batch dimension of a tensor inside a batched call is k groups of N (k = 2 with
    classifier-free guidance, 1 for a text encoder); image i's lone call would see rows i, N+i,
    ... stacked, which is the chunk given to the matrix product here.
    """
    import torch
    from torch.nn import functional

    images = self._localimg_grouping.images
    rows = x.shape[0] if x.dim() >= 2 else 0
    if images <= 1 or rows < images or rows % images:
        return functional.linear(x, self.weight, self.bias)
    groups = rows // images
    rest = x.shape[1:]
    per_image = x.reshape(groups, images, *rest).transpose(0, 1)
    outputs = [
        functional.linear(per_image[i].contiguous(), self.weight, self.bias) for i in range(images)
    ]
    out = torch.stack(outputs)  # (images, groups, ..., out features)
    return out.transpose(0, 1).reshape(rows, *out.shape[2:])


def make_linear_layers_batch_invariant(pipe: Any) -> BatchGrouping:
    """Patch every plain nn.Linear of the pipeline's modules (shared by its sibling pipelines)."""
    import torch

    grouping = BatchGrouping()
    for component in getattr(pipe, "components", {}).values():
        if not isinstance(component, torch.nn.Module):
            continue
        for module in component.modules():
            plain = isinstance(module, torch.nn.Linear) and (
                type(module).forward is torch.nn.Linear.forward
            )
            if plain and "_localimg_grouping" not in module.__dict__:
                module.__dict__["_localimg_grouping"] = grouping
                module.forward = types.MethodType(_grouped_linear, module)
    return grouping
