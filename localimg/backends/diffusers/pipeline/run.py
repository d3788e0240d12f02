"""One pipeline call, guarded: what it raises becomes a localimg error, a cancel stops it.

generate (one image per call) and generate_batch (several merged requests in one call) both run
the pipeline through `run_call`, so an out-of-memory, a pipeline's ValueError or a cancelled
request reads the same whichever path ran it. torch is imported only when a call runs.
"""

from __future__ import annotations

import contextlib
import threading
import types
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

from localimg.backends.diffusers.pipeline.tasks import Interrupted
from localimg.errors import BackendError, Cancelled, InvalidRequest


@contextlib.contextmanager
def pipeline_errors(pipe: Any, out_of_memory: str) -> Iterator[None]:
    """Turn what a pipeline call raises into localimg errors (one place for every call site)."""
    import torch

    try:
        yield
    except torch.OutOfMemoryError:
        raise BackendError(out_of_memory) from None
    except ValueError as exc:
        raise InvalidRequest(f"{type(pipe).__name__}: {exc}") from None
    except RuntimeError as exc:
        raise BackendError(f"generation failed: {exc}") from None


def run_call(
    pipe: Any,
    arguments: dict[str, Any],
    out_of_memory: str,
    cancel: threading.Event,
    *contexts: AbstractContextManager[Any],
) -> Any:
    """`pipe(**arguments)` without autograd, inside `contexts` (entered in order: batch grouping,
    step cache); Cancelled when the request was cancelled during the call."""
    import torch

    try:
        with (
            pipeline_errors(pipe, out_of_memory),
            torch.inference_mode(),
            contextlib.ExitStack() as stack,
        ):
            stack.enter_context(seeded_scheduler_steps(pipe, arguments.get("generator")))
            for context in contexts:
                stack.enter_context(context)
            output = pipe(**arguments)
    except Interrupted:  # a legacy step callback stopped it (tasks.legacy_callback)
        raise Cancelled("the request was cancelled") from None
    if cancel.is_set():
        raise Cancelled("the request was cancelled")
    return output


@contextlib.contextmanager
def seeded_scheduler_steps(pipe: Any, generator: Any) -> Iterator[None]:
    """The call's generator for the scheduler's own noise, where the pipeline passes none.

    A sampler that adds noise at each step (LCM on the flow models) draws it in `step(...,
    generator=None)`: the flow pipelines never pass one, so the same seed gave other pixels. With
    the call's generator (one per image in a batch) each step's noise follows from the seed, as
    the starting latents do; a pipeline that passes its own is left as it is."""
    import inspect

    scheduler: Any = getattr(pipe, "scheduler", None)
    step = getattr(scheduler, "step", None)
    if generator is None or step is None or "generator" not in inspect.signature(step).parameters:
        yield
        return

    def step_with_generator(self: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("generator") is None:
            kwargs["generator"] = generator
        return type(self).step(self, *args, **kwargs)

    # A bound method, so a pipeline's deepcopy of the scheduler (LTX-2's audio scheduler) steps
    # itself, not this one.
    scheduler.step = types.MethodType(step_with_generator, scheduler)
    try:
        yield
    finally:
        del scheduler.step  # the class's own method again
