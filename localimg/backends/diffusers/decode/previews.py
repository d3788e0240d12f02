"""Previews of a running diffusers generation, made from the latents at a step's end.

Two ways, cheapest first where nothing better is loaded:
- the pipeline's own VAE when it is a tiny autoencoder (`AutoencoderTiny`, TAESD): a real decode at
  a few percent of a denoiser step;
- otherwise a latent-to-RGB linear projection: each latent channel's contribution to R, G and B
  (the per-family factors stable-diffusion.cpp uses in latent-preview.h, MIT licence: SD1/SD2 and
  SDXL 4 channels, SD3 and FLUX/Z-Image 16, Wan 2.1/Qwen-Image 16, FLUX.2 32 in 2x2 patches), then
  bilinear upscaling. A latent of an unknown channel count shows its first three channels,
  normalised. Packed latents (FLUX, Qwen-Image: a token sequence) are unpacked first; a video's
  latents show their first frame.

The latents are only read (copied to float on the CPU), so a preview never changes the image.
"""

from __future__ import annotations

import logging
from typing import Any

from localimg.backends.previews import preview_size

log = logging.getLogger(__name__)

# (rows: latent channels, columns: R, G, B), bias per colour: stable-diffusion.cpp's tables.
_SD = (
    (
        (0.337366, 0.216344, 0.257386),
        (0.165636, 0.386828, 0.046994),
        (-0.267803, 0.237036, 0.223517),
        (-0.178022, -0.200862, -0.678514),
    ),
    (-0.017478, -0.055834, -0.105825),
)
_SDXL = (
    (
        (0.258303, 0.277640, 0.329699),
        (-0.299701, 0.105446, 0.014194),
        (0.050522, 0.186163, -0.143257),
        (-0.211938, -0.149892, -0.080036),
    ),
    (0.144381, -0.033313, 0.007061),
)
_SD3 = (
    (
        (-0.0645, 0.0177, 0.1052),
        (0.0028, 0.0312, 0.0650),
        (0.1848, 0.0762, 0.0360),
        (0.0944, 0.0360, 0.0889),
        (0.0897, 0.0506, -0.0364),
        (-0.0020, 0.1203, 0.0284),
        (0.0855, 0.0118, 0.0283),
        (-0.0539, 0.0658, 0.1047),
        (-0.0057, 0.0116, 0.0700),
        (-0.0412, 0.0281, -0.0039),
        (0.1106, 0.1171, 0.1220),
        (-0.0248, 0.0682, -0.0481),
        (0.0815, 0.0846, 0.1207),
        (-0.0120, -0.0055, -0.0867),
        (-0.0749, -0.0634, -0.0456),
        (-0.1418, -0.1457, -0.1259),
    ),
    (0.0, 0.0, 0.0),
)
_FLUX = (
    (
        (-0.041168, 0.019917, 0.097253),
        (0.028096, 0.026730, 0.129576),
        (0.065618, -0.067950, -0.014651),
        (-0.012998, -0.014762, 0.081251),
        (0.078567, 0.059296, -0.024687),
        (-0.015987, -0.003697, 0.005012),
        (0.033605, 0.138999, 0.068517),
        (-0.024450, -0.063567, -0.030101),
        (-0.040194, -0.016710, 0.127185),
        (0.112681, 0.088764, -0.041940),
        (-0.023498, 0.093664, 0.025543),
        (0.082899, 0.048320, 0.007491),
        (0.075712, 0.074139, 0.081965),
        (-0.143501, 0.018263, -0.136138),
        (-0.025767, -0.082035, -0.040023),
        (-0.111849, -0.055589, -0.032361),
    ),
    (0.024600, -0.006937, -0.008089),
)
_WAN21 = (
    (
        (0.015123, -0.148418, 0.479828),
        (0.003652, -0.010680, -0.037142),
        (0.212264, 0.063033, 0.016779),
        (0.232999, 0.406476, 0.220125),
        (-0.051864, -0.082384, -0.069396),
        (0.085005, -0.161492, 0.010689),
        (-0.245369, -0.506846, -0.117010),
        (-0.151145, 0.017721, 0.007207),
        (-0.293239, -0.207936, -0.421135),
        (-0.187721, 0.050783, 0.177649),
        (-0.013067, 0.265964, 0.166578),
        (0.028327, 0.109329, 0.108642),
        (-0.205343, 0.043991, 0.148914),
        (0.014307, -0.048647, -0.007219),
        (0.217150, 0.053074, 0.319923),
        (0.155357, 0.083156, 0.064780),
    ),
    (-0.270270, -0.234976, -0.456853),
)
_FLUX2 = (
    (
        (0.000736, -0.008385, -0.019710),
        (-0.001352, -0.016392, 0.020693),
        (-0.006376, 0.002428, 0.036736),
        (0.039384, 0.074167, 0.119789),
        (0.007464, -0.005705, -0.004734),
        (-0.004086, 0.005287, -0.000409),
        (-0.032835, 0.050802, -0.028120),
        (-0.003158, -0.000835, 0.000406),
        (-0.112840, -0.084337, -0.023083),
        (0.001462, -0.006656, 0.000549),
        (-0.009980, -0.007480, 0.009702),
        (0.032540, 0.000214, -0.061388),
        (0.011023, 0.000694, 0.007143),
        (-0.001468, -0.006723, -0.001678),
        (-0.005921, -0.010320, -0.003907),
        (-0.028434, 0.027584, 0.018457),
        (0.014349, 0.011523, 0.000441),
        (0.009874, 0.003081, 0.001507),
        (0.002218, 0.005712, 0.001563),
        (0.053010, -0.019844, 0.008683),
        (-0.002507, 0.005384, 0.000938),
        (-0.002177, -0.011366, 0.003559),
        (-0.000261, 0.015121, -0.003240),
        (-0.003944, -0.002083, 0.005043),
        (-0.009138, 0.011336, 0.003781),
        (0.011429, 0.003985, -0.003855),
        (0.010518, -0.005586, 0.010131),
        (0.007883, 0.002912, -0.001473),
        (-0.003318, -0.003160, 0.003684),
        (-0.034560, -0.008740, 0.012996),
        (0.000166, 0.001079, -0.012153),
        (0.017772, 0.000937, -0.011953),
    ),
    (-0.028738, -0.098463, -0.107619),
)

Table = tuple[tuple[tuple[float, float, float], ...], tuple[float, float, float]]


def projection_for(pipeline_name: str, channels: int) -> Table | None:
    """The latent-to-RGB factors for a pipeline class and its latent channels, or None."""
    name = pipeline_name
    if channels == 4:
        return _SDXL if "XL" in name else _SD
    if channels == 16:
        if "StableDiffusion3" in name:
            return _SD3
        if "Flux" in name or "ZImage" in name or "Chroma" in name:
            return _FLUX
        if "Wan" in name or "QwenImage" in name or "Anima" in name:  # Anima: the Qwen-Image VAE
            return _WAN21
        return None
    if channels == 32 and "Flux2" in name:
        return _FLUX2
    return None


def _spatial(latents: Any, width: int, height: int, scale: int) -> tuple[Any, bool]:
    """One image's latents as (C, h, w); True when they came packed in 2x2 patches."""
    sample = latents[0]
    if sample.ndim == 4:  # video (C, F, h, w): the first frame
        return sample[:, 0], False
    if sample.ndim == 2:  # packed (tokens, C*4): FLUX-style 2x2 patches, row-major tokens
        h, w = height // (scale * 2), width // (scale * 2)
        tokens, features = sample.shape
        if h * w != tokens or features % 4:
            return None, False
        grid = sample.reshape(h, w, features).permute(2, 0, 1)  # (C*4, h, w)
        return grid, True
    return sample, False


def _unpatch(grid: Any) -> Any:
    """(C*4, h, w) with channel c*4 + dy*2 + dx → (C, 2h, 2w)."""
    features, h, w = grid.shape
    channels = features // 4
    return grid.reshape(channels, 2, 2, h, w).permute(0, 3, 1, 4, 2).reshape(channels, h * 2, w * 2)


class Previewer:
    """Turns a step's latents into a small RGB PIL image for one pipeline."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self.name = type(pipe).__name__
        self.scale = int(getattr(pipe, "vae_scale_factor", 8) or 8)
        vae = getattr(pipe, "vae", None)
        self.tiny: Any = vae if type(vae).__name__ == "AutoencoderTiny" else None

    def __call__(self, latents: Any, width: int, height: int) -> Any:
        import torch

        with torch.no_grad():
            grid, packed = _spatial(latents.detach(), width, height, self.scale)
            if grid is None:
                return None
            if self.tiny is not None and not packed and grid.ndim == 3:
                rgb = self._tiny_decode(grid)
            else:
                rgb = self._project(grid.float().cpu(), packed)
            return _to_image(rgb, width, height)

    def _tiny_decode(self, grid: Any) -> Any:
        vae = self.tiny
        factor = float(getattr(vae.config, "scaling_factor", 1.0) or 1.0)
        sample = grid[None].to(vae.device, vae.dtype) / factor
        decoded = vae.decode(sample).sample[0]  # (3, H, W) in [-1, 1]
        return decoded.float().cpu()

    def _project(self, grid: Any, packed: bool) -> Any:
        import torch

        if packed:
            grid = _unpatch(grid)
        channels = grid.shape[0]
        table = projection_for(self.name, channels)
        if table is not None:
            factors = torch.tensor(table[0], dtype=torch.float32)  # (C, 3)
            bias = torch.tensor(table[1], dtype=torch.float32)
            return torch.einsum("chw,cr->rhw", grid, factors) + bias[:, None, None]
        # Unknown latents: the first three channels (repeated if fewer), each scaled to [-1, 1].
        first = grid[:3] if channels >= 3 else grid[:1].repeat(3, 1, 1)
        low = first.amin(dim=(1, 2), keepdim=True)
        high = first.amax(dim=(1, 2), keepdim=True)
        return (first - low) / (high - low).clamp_min(1e-6) * 2 - 1


def _to_image(rgb: Any, width: int, height: int) -> Any:
    """(3, h, w) in [-1, 1] → an RGB PIL image at the preview size (bilinear)."""
    import torch
    from PIL import Image

    size = preview_size(width, height)
    pixels = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    array = pixels.permute(1, 2, 0).contiguous().numpy()
    image = Image.fromarray(array, "RGB")
    if image.size != size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    return image


class StepPreviews:
    """The previews one request asked for: which steps, and the image at each (once per step)."""

    def __init__(self, pipe: Any, count: int, steps: int, width: int, height: int) -> None:
        from localimg.backends.previews import preview_steps

        self.wanted = preview_steps(steps, count)
        self.maker = Previewer(pipe) if self.wanted else None
        self.width, self.height = width, height
        self.done: set[tuple[int, int]] = set()

    def at(self, index: int, step: int, tensors: dict[str, Any]) -> Any:
        """The preview after `step` of image `index`, or None when none is due (or possible)."""
        if self.maker is None or step not in self.wanted or (index, step) in self.done:
            return None
        self.done.add((index, step))
        latents = tensors.get("latents")
        if latents is None:
            return None
        try:
            return self.maker(latents, self.width, self.height)
        except Exception:  # a preview must never break the generation
            log.exception("preview failed at step %d", step)
            return None
