"""One table of backend names: the registry, the A1111 sampler vocabulary and the gallery agree."""

from __future__ import annotations

import pytest

from localimg.backends import canonical_name
from localimg.config import BACKEND_ALIASES, BUILTIN_BACKENDS, GGML, builtin_backend
from localimg.server.a1111.samplers import engine_of


@pytest.mark.parametrize("name", [*BUILTIN_BACKENDS, *BACKEND_ALIASES, " SD.CPP "])
def test_every_name_means_the_same_backend_everywhere(name: str) -> None:
    backend = builtin_backend(name)
    assert backend is not None and canonical_name(name) == backend
    assert engine_of(name) == ("ggml" if backend == GGML else "diffusers")


def test_other_names_are_not_built_in() -> None:
    assert builtin_backend("stablediffusion") is None  # LocalAI's retired ncnn backend
    assert engine_of("some-plugin") == "diffusers"
