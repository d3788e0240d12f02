"""The loaded model's scheduler and a request's choice of another: the noise samplers
(schedulers.py) on noise-prediction models, their flow variants (flow.py) on flow-matching ones,
and the flow `shift`."""

from __future__ import annotations

from typing import Any

from localimg.backends.diffusers.sampling import flow, schedulers
from localimg.errors import InvalidRequest


class Sampling:
    """Which scheduler a call runs with; built from the model's own scheduler config."""

    def __init__(self, scheduler: Any, yaml_name: str | None, pipeline: str) -> None:
        self.pipeline = pipeline
        self.config = scheduler.config if scheduler is not None else None
        self.flow = flow.is_flow(self.config)
        self.yaml_name = yaml_name or None
        self.model_scheduler = scheduler
        self.default = scheduler
        if self.yaml_name and scheduler is not None:
            self.default, _ = self.build(self.yaml_name, None)

    def check(self, name: str | None) -> None:
        """Refuse a sampler this model cannot run (the flow ones name what works)."""
        if not name:
            return
        if self.config is None:
            raise InvalidRequest("this pipeline has no scheduler to choose", param="scheduler")
        if self.flow:
            flow.lookup(name, self.pipeline)
        else:
            schedulers.lookup(name)

    def build(self, name: str | None, shift: float | None) -> tuple[Any, str]:
        """A scheduler for the name (None: the model's own) with an optional fixed flow shift,
        and the label written into the image's metadata."""
        if shift is not None and not self.flow:
            raise InvalidRequest(
                f"shift applies to flow-matching models; {self.pipeline} predicts noise",
                param="shift",
            )
        if name:
            if self.flow:
                spec = flow.lookup(name, self.pipeline)
                return flow.build(spec, self.config, shift), spec.label
            return schedulers.build(name, self.config), schedulers.lookup(name).label
        if self.yaml_name:
            if shift is None:
                return self.default, self.label(self.yaml_name)
            return self.build(self.yaml_name, shift)
        if shift is not None:
            return flow.with_shift(self.model_scheduler, shift), type(self.model_scheduler).__name__
        return self.default, type(self.default).__name__

    def label(self, name: str) -> str:
        if self.flow:
            return flow.lookup(name, self.pipeline).label
        return schedulers.lookup(name).label

    def install(self, pipe: Any, name: str | None, shift: float | None) -> str:
        """Set the call's scheduler on `pipe`; returns its label."""
        if self.config is None:
            if name or shift is not None:
                raise InvalidRequest(
                    "this pipeline has no scheduler to choose",
                    param="scheduler" if name else "shift",
                )
            return ""
        pipe.scheduler, label = self.build(name, shift)
        return label
