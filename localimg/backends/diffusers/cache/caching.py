"""Step caching on the diffusers backend (issue 16): which of diffusers' cache hooks a loaded
pipeline can use, and one call run with one of them.

diffusers' caches (FirstBlockCache, TaylorSeerCache, MagCache, FasterCache) are hooks that a
denoiser subclassing `CacheMixin` registers on its blocks with `enable_cache(config)`. Whether
they work depends on the real objects, so each is decided per pipeline from them:

- the denoiser (both transformers of Wan 2.2 A14B) must be a `CacheMixin` and not compiled;
- the hooks must attach: the method is enabled once and disabled again on the denoiser at load (no
  forward pass) and must register hooks on its blocks (diffusers refuses unregistered block
  classes, e.g. Chroma's; TaylorSeer's name patterns match no module of Wan's blocks);
- FirstBlockCache, TaylorSeer and MagCache keep their state per "cond"/"uncond" cache context,
  which the pipeline's `__call__` must open (`transformer.cache_context(...)`): without them the
  first two fail and MagCache would mix both passes of true CFG in one state;
- FirstBlockCache adds the tail block's residuals to the head block's output, so the two must
  return the same tensors (FLUX.2's single-stream tail returns one, its head two: diffusers 0.42
  fails there);
- FasterCache approximates the unconditional half of a batched CFG call; it fits pipelines that
  run CFG as one batched call (`[latents] * 2`), not those that run two calls per step.

A request's cache is enabled right before its pipeline call and disabled in a `finally`, so a
cache's state never outlives its call (nor leaks into the next request, after an error or a
cancel too): `enable_cache` starts from fresh hooks each time.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from localimg.backends.diffusers.cache.cache_knobs import (
    METHODS,
    FasterCacheKnobs,
    FirstBlockCacheKnobs,
    Knobs,
    MagCacheKnobs,
    TaylorSeerCacheKnobs,
    check_method,
    parse_knobs,
)
from localimg.errors import InvalidRequest

CONTEXT_METHODS = frozenset({"first_block_cache", "taylorseer_cache", "mag_cache"})
GGML_HINT = "the stablediffusion-ggml backend has caches of its own for {what}"
GGML_UNET = "UNet models such as SD1.5/SDXL: ucache or spectrum"
GGML_DIT = "DiT models: easycache, dbcache, taylorseer, cachedit or spectrum"
# diffusers ships FLUX.1's magnitude ratios (hooks/mag_cache.py); other models need their own.
BUILT_IN_MAG_RATIOS = {"FluxTransformer2DModel": "FLUX_MAG_RATIOS"}


def denoisers(pipe: Any) -> list[Any]:
    """The modules the cache hooks go on: the UNet, or the transformer(s) (Wan 2.2 A14B has two)."""
    unet = getattr(pipe, "unet", None)
    if unet is not None:
        return [unet]
    return [
        module
        for module in (getattr(pipe, "transformer", None), getattr(pipe, "transformer_2", None))
        if module is not None
    ]


@dataclass(frozen=True)
class Support:
    """What one pipeline can use: method → "" when usable, else why not (in words)."""

    pipeline: str
    reasons: dict[str, str]
    unet: bool = False  # the denoiser is a UNet (for the hint at the other backend's caches)

    @property
    def usable(self) -> tuple[str, ...]:
        return tuple(m for m in METHODS if not self.reasons.get(m))

    def refuse(self, method: str) -> InvalidRequest:
        """The error for a method this pipeline cannot use, naming those it can."""
        usable = self.usable
        then = (
            f"methods that work for this model: {', '.join(usable)}"
            if usable
            else "no diffusers step cache works for this model; "
            + GGML_HINT.format(what=GGML_UNET if self.unet else GGML_DIT)
        )
        return InvalidRequest(
            f"cache {method} cannot run on {self.pipeline}: {self.reasons[method]}; {then}",
            param="cache",
        )


def survey(pipe: Any, compiled: bool = False) -> Support:
    """Which methods `pipe` can use, decided from its real denoiser(s) and `__call__`."""
    name = type(pipe).__name__
    found = denoisers(pipe)
    unet = getattr(pipe, "unet", None) is not None
    common = _common_reason(found, compiled)
    if common:
        return Support(name, dict.fromkeys(METHODS, common), unet)
    source = _call_source(pipe)
    reasons: dict[str, str] = {}
    for method in METHODS:
        reason = ""
        if method in CONTEXT_METHODS and "cache_context(" not in source:
            reason = (
                f"{name} does not open the per-pass cache contexts ('cond'/'uncond') this "
                "method keeps its state in"
            )
        elif method == "faster_cache" and not _batched_cfg(source):
            reason = (
                f"{name} runs the conditional and unconditional passes as separate calls (or no "
                "CFG at all); faster_cache approximates the unconditional half of one batched "
                "CFG call"
            )
        reason = reason or next((r for d in found if (r := _attach_reason(d, method))), "")
        reasons[method] = reason
    return Support(name, reasons, unet)


def _common_reason(found: list[Any], compiled: bool) -> str:
    from diffusers.models.cache_utils import CacheMixin

    if not found:
        return "the pipeline has no UNet or transformer"
    if compiled:
        return (
            "the denoiser is compiled (options compile) and the cache hooks change its blocks; "
            "drop compile to use a step cache"
        )
    plain = [type(d).__name__ for d in found if not isinstance(d, CacheMixin)]
    if plain:
        return f"{plain[0]} has no diffusers cache hooks (it is not a CacheMixin model)"
    return ""


def _call_source(pipe: Any) -> str:
    try:
        return inspect.getsource(type(pipe).__call__)
    except (OSError, TypeError):
        return ""


def _batched_cfg(source: str) -> bool:
    """Whether `__call__` stacks the unconditional and conditional latents into one batch."""
    compact = source.replace(" ", "")
    return "[latents]*2" in compact or "[latent_model_input]*2" in compact


def _attach_reason(denoiser: Any, method: str) -> str:
    """Enable the method on `denoiser` and disable it again (no forward pass): why it does not
    fit, or "" when its hooks attach to the denoiser's blocks."""
    kind = type(denoiser).__name__
    if method == "first_block_cache":
        mismatch = _head_tail_mismatch(denoiser)
        if mismatch:
            return mismatch
    config = build_config(method, _probe_knobs(method), steps=2, pipe=None, cfg_on=False)
    before = _block_hooks(denoiser)
    try:
        denoiser.enable_cache(config)
    except (ValueError, IndexError, TypeError, AttributeError, KeyError) as exc:
        return f"diffusers cannot hook {kind} ({exc})"
    try:
        added = _block_hooks(denoiser) - before
    finally:
        denoiser.disable_cache()
    if added <= 0:
        return f"its hooks match no block of {kind}"
    return ""


def _probe_knobs(method: str) -> Knobs:
    return parse_knobs(method, {"mag_ratios": [1.0, 1.0]} if method == "mag_cache" else {})


def _block_hooks(denoiser: Any) -> int:
    """How many hooks are registered on the denoiser's submodules (not on the denoiser itself)."""
    count = 0
    for module in denoiser.modules():
        registry = getattr(module, "_diffusers_hook", None)
        if module is not denoiser and registry is not None:
            count += len(getattr(registry, "hooks", {}))
    return count


def _head_tail_mismatch(denoiser: Any) -> str:
    """FirstBlockCache adds the tail block's residuals to the head block's outputs: both blocks
    must return the same tensors (diffusers' block registry says which each returns)."""
    import importlib

    import torch
    from diffusers.hooks._helpers import TransformerBlockRegistry

    # The block lists diffusers' hooks walk, in the denoiser's own order (as apply_* does).
    names = importlib.import_module("diffusers.hooks._common")._ALL_TRANSFORMER_BLOCK_IDENTIFIERS
    blocks = [
        block
        for name, child in denoiser.named_children()
        if name in names and isinstance(child, torch.nn.ModuleList)
        for block in child
    ]
    if len(blocks) < 2:
        return ""  # the dry enable reports it
    try:
        head = TransformerBlockRegistry.get(type(blocks[0]))
        tail = TransformerBlockRegistry.get(type(blocks[-1]))
    except ValueError:
        return ""  # not registered: the dry enable says so in diffusers' words
    if (head.return_encoder_hidden_states_index is None) != (
        tail.return_encoder_hidden_states_index is None
    ):
        return (
            f"its first block ({type(blocks[0]).__name__}) and last block "
            f"({type(blocks[-1]).__name__}) return different outputs, which diffusers' "
            "FirstBlockCache cannot combine"
        )
    return ""


@dataclass(frozen=True)
class Plan:
    """One call's cache: the method and its checked knobs."""

    method: str
    knobs: Knobs


def plan(
    method: str | None, knobs: dict[str, Any], support: Support, denoiser_kind: str
) -> Plan | None:
    """Check a merged request's cache against the pipeline that will run it."""
    if method is None:
        return None
    checked = parse_knobs(method, knobs)
    if method not in support.usable:
        raise support.refuse(method)
    if (
        isinstance(checked, MagCacheKnobs)
        and checked.mag_ratios is None
        and denoiser_kind not in BUILT_IN_MAG_RATIOS
    ):
        raise InvalidRequest(
            "mag_cache needs mag_ratios, the magnitude ratios of this checkpoint (one per step "
            f"of a MagCache calibration run); diffusers has them built in only for "
            f"{', '.join(BUILT_IN_MAG_RATIOS)}",
            param="cache",
        )
    return Plan(method, checked)


def build_config(method: str, knobs: Knobs, steps: int, pipe: Any, cfg_on: bool) -> Any:
    """The diffusers config object of a method for one call."""
    import diffusers

    if isinstance(knobs, FirstBlockCacheKnobs):
        return diffusers.FirstBlockCacheConfig(threshold=knobs.threshold)
    if isinstance(knobs, TaylorSeerCacheKnobs):
        import torch

        fields = knobs.model_dump()
        fields["taylor_factors_dtype"] = getattr(torch, knobs.taylor_factors_dtype)
        return diffusers.TaylorSeerCacheConfig(**fields)
    if isinstance(knobs, MagCacheKnobs):
        fields = knobs.model_dump()
        if fields["mag_ratios"] is None:
            from diffusers.hooks import mag_cache

            kind = type(denoisers(pipe)[0]).__name__
            fields["mag_ratios"] = getattr(mag_cache, BUILT_IN_MAG_RATIOS[kind]).clone()
        return diffusers.MagCacheConfig(num_inference_steps=steps, **fields)
    if isinstance(knobs, FasterCacheKnobs):
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in knobs.model_dump().items()}
        video = pipe is not None and "num_frames" in inspect.signature(pipe.__call__).parameters
        return diffusers.FasterCacheConfig(
            **fields,
            current_timestep_callback=lambda: pipe.current_timestep,
            # Without CFG the call has no unconditional half to approximate: only the
            # attention-skipping part of FasterCache acts (diffusers' guidance-distilled mode).
            is_guidance_distilled=not cfg_on,
            tensor_format="BCFHW" if video else "BCHW",
        )
    raise InvalidRequest(f"unknown cache method {method!r}", param="cache")


@contextlib.contextmanager
def applied(pipe: Any, plan: Plan | None, steps: int, cfg_on: bool) -> Iterator[None]:
    """Run the body with the plan's cache on every denoiser of `pipe`, and off again after."""
    if plan is None:
        yield
        return
    enabled: list[Any] = []
    try:
        for denoiser in denoisers(pipe):
            if getattr(denoiser, "is_cache_enabled", False):
                denoiser.disable_cache()  # left on by a crash elsewhere: start clean
            denoiser.enable_cache(build_config(plan.method, plan.knobs, steps, pipe, cfg_on))
            enabled.append(denoiser)
        yield
    finally:
        for denoiser in enabled:
            denoiser.disable_cache()


__all__ = ["METHODS", "Plan", "Support", "applied", "check_method", "plan", "survey"]
