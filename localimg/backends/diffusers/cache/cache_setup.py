"""The diffusers backend's step caches per request and per loaded model: the checks before
queueing, the YAML's `cache:` at load, the plan of each call (caching.py does the hooks).

Kept apart from backend.py so that the backend class only asks four questions: may this request
be queued (check_request), is the YAML's cache usable (check_yaml), what cache does this call run
with (plan_for / plan_for_batch), and run it (applied).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from localimg.backends.diffusers.cache.cache_knobs import METHODS, parse_knobs
from localimg.backends.diffusers.cache.caching import (
    Plan,
    Support,
    applied,
    denoisers,
    plan,
    survey,
)
from localimg.config.options import cache_from_options
from localimg.errors import ConfigError, InvalidRequest
from localimg.requests import CACHE_OFF

if TYPE_CHECKING:
    from localimg.config import ModelConfig
    from localimg.requests import ImageRequest

__all__ = ["METHODS", "Caches", "check_request"]


def check_request(request: ImageRequest, config: ModelConfig) -> None:
    """Before queueing: the request's method is one this backend knows and its knobs are the
    method's own, well typed and in range (the method being the request's, else the YAML's).
    Whether the loaded model can use it is decided at the call, on the real pipeline."""
    method = request.cache
    if method in CACHE_OFF:
        return
    if method is None:
        try:
            method, _ = cache_from_options(config.parsed_options())
        except ValueError:
            return  # the load reports the YAML's mistake
        if method is None or method in CACHE_OFF:
            return  # knobs without a method: the merge refuses them
    parse_knobs(method, request.cache_options)


class Caches:
    """The loaded model's step caches: what each pipeline (the loaded one, its img2img and
    inpaint siblings) can use, surveyed once per pipeline class on first use."""

    def __init__(self, compiled: bool = False) -> None:
        self._compiled = compiled
        self._support: dict[type, Support] = {}

    def support(self, pipe: Any) -> Support:
        kind = type(pipe)
        if kind not in self._support:
            self._support[kind] = survey(pipe, self._compiled)
        return self._support[kind]

    def describe(self, pipe: Any) -> str:
        """The methods the loaded pipeline can use, for describe() and /v1/models."""
        if pipe is None:
            return ""
        return ",".join(self.support(pipe).usable) or "none"

    def check_yaml(self, pipe: Any, config: ModelConfig) -> None:
        """The YAML's `cache:<method>` and `cache_<knob>` options, refused at load when the
        loaded model cannot use them, so that no request finds out later."""
        where = f"{config.where}: options"
        try:
            method, knobs = cache_from_options(config.parsed_options())
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if method is None or method in CACHE_OFF:
            if knobs:
                raise ConfigError(
                    f"{where}: {', '.join('cache_' + k for k in sorted(knobs))} need a step "
                    "cache: add cache:<method> (one of " + ", ".join(METHODS) + ")"
                )
            return
        try:
            plan(method, knobs, self.support(pipe), _denoiser_kind(pipe))
        except InvalidRequest as exc:
            raise ConfigError(f"{where}: cache:{method}: {exc.message}") from None

    def plan_for(self, pipe: Any, request: ImageRequest) -> Plan | None:
        """The merged request's cache checked against the pipeline that serves it."""
        return plan(
            request.cache, dict(request.cache_options), self.support(pipe), _denoiser_kind(pipe)
        )

    def plan_for_batch(self, pipe: Any, requests: list[ImageRequest]) -> Plan | None:
        """One cache for a batched call: the batch's requests share the YAML's (a request that
        names its own cache never batches); a batch that differs is refused, never mixed."""
        first = requests[0]
        for other in requests[1:]:
            if (other.cache, dict(other.cache_options)) != (first.cache, dict(first.cache_options)):
                raise InvalidRequest("requests with different step caches cannot be batched")
        return self.plan_for(pipe, first)

    @contextlib.contextmanager
    def applied(self, pipe: Any, cache: Plan | None, request: ImageRequest) -> Iterator[None]:
        cfg_on = (request.cfg_scale or 0.0) > 1.0
        with applied(pipe, cache, request.steps or 1, cfg_on):
            yield


def _denoiser_kind(pipe: Any) -> str:
    found = denoisers(pipe)
    return type(found[0]).__name__ if found else ""
