"""A diffusers modular pipeline driven like a classic one: the call adapter.

Some families exist in diffusers only as modular pipelines (Anima: AnimaModularPipeline over
AnimaAutoBlocks). A modular pipeline is called with its blocks' inputs and returns a
PipelineState; it has no `callback_on_step_end`, no `_interrupt` flag and no `guidance_scale`
(classifier-free guidance is a `guider` component). The backend, the previews, the step caches
and the samplers all speak to a classic pipeline, so `ModularCall` wraps the loaded modular
pipeline in that shape instead of teaching each of them a second one:

- its `__call__` takes the classic keywords (the ones localimg maps requests onto) and passes
  them to the blocks; `guidance_scale` is set on the loaded guider for the call, so it acts
  exactly as a ClassifierFreeGuidance(guidance_scale=...) set by hand would;
- step-end callbacks and cancelling come from the blocks' denoising loops: each
  LoopSequentialPipelineBlocks' `loop_step` is wrapped so that after every step the callback sees
  the latents (and may replace them, as diffusers' own callbacks may), and once the callback sets
  `_interrupt` the remaining steps are skipped, as diffusers' classic pipelines skip them;
- every other attribute (components, `to`, `vae_scale_factor`, LoRA methods, ...) is the modular
  pipeline's own; setting a component (a new scheduler, a compiled transformer) sets it there.

The adapter's class is made per modular class and takes its name, so messages, the family table
and the previews' latent tables see `AnimaModularPipeline`. torch and diffusers are imported only
inside functions.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from localimg.errors import ConfigError, InvalidRequest

StepEnd = Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]

# The blocks' inputs the classic keywords go to: a modular pipeline without one of them is not
# one this adapter can drive (it would drop the keyword silently).
BLOCK_INPUTS = (
    "prompt",
    "negative_prompt",
    "height",
    "width",
    "num_inference_steps",
    "max_sequence_length",
    "generator",
    "output_type",
)

OUTPUT_TYPES = ("pil", "np", "pt")


@dataclass
class ModularOutput:
    """What a classic pipeline returns: `.images`."""

    images: Any


class ModularCall:
    """A loaded modular pipeline with a classic pipeline's call (see the module docstring)."""

    def __init__(self, modular: Any) -> None:
        # `modular.blocks` is a deep copy: the blocks that run are `_blocks`, hooked below.
        blocks = modular._blocks
        missing = [name for name in BLOCK_INPUTS if name not in blocks.input_names]
        if missing:
            raise ConfigError(
                f"{type(modular).__name__}: its blocks take no {', '.join(missing)}, which "
                "localimg passes; this modular pipeline is not supported"
            )
        if not hasattr(modular.guider, "guidance_scale"):
            raise ConfigError(
                f"{type(modular).__name__}: its guider {type(modular.guider).__name__} has no "
                "guidance_scale for cfg_scale to set; this model is not supported"
            )
        object.__setattr__(self, "_modular", modular)
        object.__setattr__(self, "_guider", modular.guider)
        object.__setattr__(self, "_step_end", None)
        object.__setattr__(self, "_interrupt", False)
        object.__setattr__(self, "_img2img", None)
        object.__setattr__(self, "_loops", _hook_loops(blocks, self))
        self.set_progress_bar_config(disable=True)

    @property
    def modular(self) -> Any:
        """The wrapped diffusers ModularPipeline."""
        return self._modular

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._modular, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._modular.component_names:  # a scheduler, a compiled transformer, ...
            setattr(self._modular, name, value)
        else:
            object.__setattr__(self, name, value)

    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 4.0,
        max_sequence_length: int = 512,
        generator: Any = None,
        callback_on_step_end: StepEnd | None = None,
        output_type: str = "pil",
    ) -> ModularOutput:
        """Text to image: the blocks run once with these inputs; the images they make."""
        inputs = dict(locals())
        del inputs["self"]
        return self.run(inputs)

    def run(self, inputs: dict[str, Any]) -> ModularOutput:
        """One run of the blocks: `guidance_scale` and `callback_on_step_end` are the adapter's,
        the rest are the blocks' own inputs."""
        modular = self._modular
        if inputs.get("output_type") not in OUTPUT_TYPES:
            raise InvalidRequest(
                f"{type(self).__name__} makes {', '.join(OUTPUT_TYPES)} images, not "
                f"{inputs.get('output_type')!r} (its latents are not an image the latent hires "
                "fix can resize: use a pixel upscaler such as lanczos)",
                param="hires_upscaler",
            )
        # The loaded guider at this call's scale (what ClassifierFreeGuidance reads each step; a
        # new guider per call would only repeat diffusers' "experimental" warning).
        self._guider.guidance_scale = float(inputs.pop("guidance_scale"))
        modular.guider = self._guider
        object.__setattr__(self, "_interrupt", False)
        object.__setattr__(self, "_step_end", inputs.pop("callback_on_step_end"))
        try:
            images = modular(output="images", **inputs)
        finally:
            object.__setattr__(self, "_step_end", None)
        return ModularOutput(images=images)

    def task_sibling(self, mode: str) -> Any:
        """The pipeline of another task over the same blocks and weights (pipeline/tasks.py asks
        for it): img2img where the blocks take an image and a strength; nothing else."""
        name = type(self).__name__
        if mode == "inpaint":
            raise InvalidRequest(f"{name} does not inpaint: its blocks take no mask", param="mask")
        if mode not in ("img2img", "variation"):
            raise InvalidRequest(f"{name} does text-to-image and img2img, not {mode}", param="mode")
        if not {"image", "strength"} <= set(self._modular._blocks.input_names):
            raise InvalidRequest(f"{name}'s blocks take no input image", param="image")
        if self._img2img is None:
            object.__setattr__(self, "_img2img", img2img_class(name)(self))
        return self._img2img

    @property
    def interrupt(self) -> bool:
        return bool(self._interrupt)

    def set_progress_bar_config(self, **kwargs: Any) -> None:
        """The denoising loops' progress bars (the only ones a modular pipeline draws)."""
        for loop in self._loops:
            loop.set_progress_bar_config(**kwargs)

    def enable_model_cpu_offload(self, *_args: Any, **_kwargs: Any) -> None:
        raise ConfigError(
            f"options: cpu_offload is not supported for {type(self).__name__} (a diffusers "
            "modular pipeline); leave it out"
        )

    def enable_attention_slicing(self, *_args: Any, **_kwargs: Any) -> None:
        raise ConfigError(
            f"options: attention_slicing is not supported for {type(self).__name__} (a diffusers "
            "modular pipeline); leave it out"
        )

    def after_step(self, step: int, timestep: Any, block_state: Any) -> None:
        """The step-end callback of the running call, with the latents it may replace."""
        callback = self._step_end
        if callback is None:
            return
        tensors = callback(self, step, timestep, {"latents": block_state.latents})
        latents = (tensors or {}).get("latents")
        if latents is not None:
            block_state.latents = latents


def _hook_loops(blocks: Any, adapter: ModularCall) -> list[Any]:
    """Wrap the `loop_step` of every denoising loop under `blocks`: the adapter's step end after
    each step, and no step at all once the adapter is interrupted."""
    from diffusers.modular_pipelines.modular_pipeline import LoopSequentialPipelineBlocks

    loops: list[Any] = []
    pending = [blocks]
    while pending:
        block = pending.pop()
        pending.extend(getattr(block, "sub_blocks", {}).values())
        if isinstance(block, LoopSequentialPipelineBlocks) and block not in loops:
            loops.append(block)
    if not loops:  # no step to report progress from or to cancel at
        raise ConfigError(
            f"{type(adapter.modular).__name__}: its blocks have no denoising loop localimg can "
            "follow step by step; this modular pipeline is not supported"
        )
    for loop in loops:
        loop.loop_step = _hooked(loop.loop_step, adapter)
    return loops


def _hooked(step: Callable[..., tuple[Any, Any]], adapter: ModularCall) -> Callable[..., Any]:
    """One loop's `loop_step(components, block_state, i=..., t=...)`, hooked."""

    def loop_step(components: Any, block_state: Any, **kwargs: Any) -> tuple[Any, Any]:
        if adapter.interrupt:
            return components, block_state  # cancelled: the remaining steps are skipped
        components, block_state = step(components, block_state, **kwargs)
        adapter.after_step(kwargs["i"], kwargs["t"], block_state)
        return components, block_state

    return loop_step


class ModularImg2Img:
    """The img2img task of a modular pipeline: the same adapter, blocks and weights, called with
    an input image (the blocks choose their img2img branch when `image` is given)."""

    def __init__(self, base: ModularCall) -> None:
        object.__setattr__(self, "_base", base)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._base, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._base, name, value)  # a scheduler, `_interrupt`: the one adapter's

    def __call__(
        self,
        prompt: str | list[str],
        image: Any,
        strength: float = 0.9,
        negative_prompt: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 4.0,
        max_sequence_length: int = 512,
        generator: Any = None,
        callback_on_step_end: StepEnd | None = None,
        output_type: str = "pil",
    ) -> ModularOutput:
        """Image to image: the blocks run once with these inputs; the images they make."""
        inputs = dict(locals())
        del inputs["self"]
        return self._base.run(inputs)


@functools.cache
def img2img_class(name: str) -> type[ModularImg2Img]:
    """ModularImg2Img under the modular class's own name (the family table reads it)."""
    return type(name, (ModularImg2Img,), {"__doc__": f"{name}'s img2img task."})


@functools.cache
def adapter_class(name: str) -> type[ModularCall]:
    """ModularCall under the modular class's own name (one class per name)."""
    return type(name, (ModularCall,), {"__doc__": f"{name}, called like a classic pipeline."})


def wrap(modular: Any) -> ModularCall:
    """The loaded modular pipeline in its adapter."""
    return adapter_class(type(modular).__name__)(modular)
