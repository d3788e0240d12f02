"""`<lora:name:weight>` prompt tags on the diffusers engine (the tags' syntax and file lookup:
localimg/prompts/lora_tags.py).

Each tagged file is loaded once as a peft adapter and kept on the pipeline; a request sets its
tags' adapters at their weights beside the YAML's `lora_adapters` (load/loras.py, loaded as
adapters too), and after it, even when it fails or is cancelled, the YAML's adapters alone are set
back (or, without any, the adapters are disabled): the next request is clean. The prompts the
pipeline gets have no tags left. A tag in the negative prompt counts as one in the prompt: a LoRA
changes the model, not one prompt.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from localimg._util.hub_errors import first_line
from localimg.backends.diffusers.load.loras import apply_loras
from localimg.backends.diffusers.options import parse_options
from localimg.config import ModelConfig
from localimg.errors import BackendNotInstalled, InvalidRequest
from localimg.prompts.lora_files import note_lora_hashes
from localimg.prompts.lora_tags import find_lora, lora_tags, parse_tags, strip_tags, tag_key
from localimg.requests import ImageRequest, ImageResult

log = logging.getLogger(__name__)


def lora_folder(config: ModelConfig) -> Path:
    """Where the model's tags look: its `lora_dir` option, else the models dir's `loras/`."""
    return config.resolve_path(parse_options(config).lora_dir or "loras")


def check_request(request: ImageRequest, config: ModelConfig) -> None:
    """Refuse before queueing: a tag whose file is missing or whose weight is out of range."""
    folder = lora_folder(config)
    for text in (request.prompt, request.negative_prompt):
        if text:
            lora_tags(text, folder)


def without_tags(request: ImageRequest) -> ImageRequest:
    negative = request.negative_prompt
    return replace(
        request,
        prompt=strip_tags(request.prompt),
        negative_prompt=strip_tags(negative) if negative is not None else None,
    )


@dataclass
class PromptLoras:
    """The YAML's adapters (name → scale), the tags' folder and the tags' adapters loaded so far."""

    yaml: dict[str, float] = field(default_factory=dict)
    folder: Path | None = None
    loaded: dict[Path, str] = field(default_factory=dict)  # file → adapter name

    @classmethod
    def load(cls, pipe: Any, config: ModelConfig) -> PromptLoras:
        """Apply the YAML's LoRAs to a freshly loaded pipeline; no tag adapter is loaded yet."""
        return cls(apply_loras(pipe, config), lora_folder(config))

    @contextmanager
    def applied(self, pipe: Any, requests: list[ImageRequest]) -> Iterator[list[ImageRequest]]:
        """The requests without tags, their tags' adapters set on `pipe` while the block runs."""
        if len({tag_key(r.prompt, r.negative_prompt) for r in requests}) > 1:
            raise InvalidRequest("requests with different LoRA tags cannot share one batch")
        plain = [without_tags(r) for r in requests]
        first = requests[0]
        tags = [*parse_tags(first.prompt), *parse_tags(first.negative_prompt or "")]
        if not tags:
            yield plain
            return
        if self.folder is None or not hasattr(pipe, "load_lora_weights"):
            raise InvalidRequest(
                f"{type(pipe).__name__} does not support LoRA adapters: remove the <lora:...> tags",
                param="prompt",
            )
        weights = dict(self.yaml)
        try:
            for name, weight in tags:
                adapter = self._adapter(pipe, find_lora(name, self.folder))
                weights[adapter] = weights.get(adapter, 0.0) + weight
            pipe.enable_lora()
            pipe.set_adapters(list(weights), adapter_weights=list(weights.values()))
            yield plain
        finally:
            self._reset(pipe)

    def _adapter(self, pipe: Any, path: Path) -> str:
        """The adapter name of a LoRA file, loading it on first use."""
        if path in self.loaded:
            return self.loaded[path]
        name = f"tag{len(self.loaded)}"
        try:
            pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=name)
            problem = None if name in _adapter_names(pipe) else "none of its layers fit"
        except ImportError as exc:
            raise BackendNotInstalled(f"LoRA needs peft: pip install peft ({exc})") from None
        except (ValueError, KeyError, RuntimeError, OSError, TypeError) as exc:
            lines = [line.strip() for line in str(exc).splitlines()]
            problem = next((line for line in lines if "size mismatch" in line), first_line(exc))
        if problem is not None:
            _forget(pipe, name)
            raise InvalidRequest(
                f"LoRA {path.name!r} does not fit {type(pipe).__name__}: it was probably made "
                f"for another model family ({problem[:300]})",
                param="prompt",
            )
        log.info("LoRA %s loaded as adapter %s", path, name)
        self.loaded[path] = name
        return name

    def _reset(self, pipe: Any) -> None:
        """The YAML's adapters alone at their scales, or no adapter at all."""
        if self.yaml:
            pipe.set_adapters(list(self.yaml), adapter_weights=list(self.yaml.values()))
        elif self.loaded:
            pipe.disable_lora()


def _adapter_names(pipe: Any) -> set[str]:
    listing = pipe.get_list_adapters() if hasattr(pipe, "get_list_adapters") else {}
    return {name for names in listing.values() for name in names}


def _forget(pipe: Any, name: str) -> None:
    """Drop a half-loaded adapter, so the pipeline is as it was."""
    if name not in _adapter_names(pipe):
        return
    try:
        pipe.delete_adapters(name)
    except (ValueError, KeyError, RuntimeError) as exc:  # pragma: no cover - best effort
        log.warning("could not unload LoRA adapter %s: %s", name, exc)


Generate = Callable[[Any, ImageRequest, Any, threading.Event], ImageResult]
GenerateBatch = Callable[[Any, list[ImageRequest], Any, threading.Event], list[ImageResult]]


def with_prompt_loras(generate: Generate) -> Generate:
    """A backend's generate with its request's LoRA tags applied (and reset after)."""

    @functools.wraps(generate)
    def run(backend: Any, request: ImageRequest, progress: Any, cancel: threading.Event) -> Any:
        with backend.prompt_loras.applied(backend.pipe, [request]) as plain:
            result = generate(backend, plain[0], progress, cancel)
        note_lora_hashes([result], request.prompt, backend.prompt_loras.folder)
        return result

    return run


def with_prompt_loras_batch(generate: GenerateBatch) -> GenerateBatch:
    """A backend's generate_batch with its requests' LoRA tags (all the same) applied."""

    @functools.wraps(generate)
    def run(backend: Any, requests: list[ImageRequest], progress: Any, cancel: Any) -> Any:
        with backend.prompt_loras.applied(backend.pipe, requests) as plain:
            results = generate(backend, plain, progress, cancel)
        # the requests of a batch have the same tags (engine/batching.py)
        note_lora_hashes(results, requests[0].prompt, backend.prompt_loras.folder)
        return results

    return run
