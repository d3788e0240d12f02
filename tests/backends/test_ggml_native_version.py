"""localimg/backends/ggml/native.py: the image-buffer freeing patch applies only to the tested
stable-diffusion-cpp-python release. Checked on a stand-in binding (no native library loaded,
nothing really freed): the version lookup is monkeypatched."""

from __future__ import annotations

import ctypes
import importlib.metadata
import logging
from types import SimpleNamespace
from typing import Any

import pytest

from localimg.backends.ggml import native


class _Image(ctypes.Structure):
    _fields_ = [
        ("width", ctypes.c_uint32),
        ("height", ctypes.c_uint32),
        ("channel", ctypes.c_uint32),
        ("data", ctypes.POINTER(ctypes.c_uint8)),
    ]


class _Binding:
    """Stands in for stable_diffusion_cpp.StableDiffusion: copies nothing, frees nothing."""

    def __init__(self, *args: Any, embedding_paths: list[str] | None = None, **kw: Any) -> None:
        self.embedding_paths = embedding_paths

    def _sd_image_t_p_to_images(self, c_images: Any, count: int, upscale_factor: int) -> Any:
        return ["image"] * count


@pytest.fixture
def freed(monkeypatch: pytest.MonkeyPatch) -> list[int | None]:
    """The addresses the patch would free; the class cache emptied for the test."""
    calls: list[int | None] = []
    monkeypatch.setattr(native, "_FREE", calls.append)
    monkeypatch.setitem(native._state, "model_cls", None)
    return calls


def installed(monkeypatch: pytest.MonkeyPatch, version: str | None) -> None:
    """Make importlib.metadata report `version` for the binding (None: not installed)."""
    real = importlib.metadata.version

    def lookup(name: str) -> str:
        if name != native.DISTRIBUTION:
            return real(name)
        if version is None:
            raise importlib.metadata.PackageNotFoundError(name)
        return version

    monkeypatch.setattr(importlib.metadata, "version", lookup)


def two_images() -> tuple[Any, list[Any]]:
    buffers = [(ctypes.c_uint8 * 4)() for _ in range(2)]
    array = (_Image * 2)()
    for item, buffer in zip(array, buffers, strict=True):
        item.data = ctypes.cast(buffer, ctypes.POINTER(ctypes.c_uint8))
    return ctypes.cast(array, ctypes.POINTER(_Image)), [*buffers, array]


def test_the_tested_release_frees_each_image_and_the_array(
    monkeypatch: pytest.MonkeyPatch, freed: list[int | None]
) -> None:
    installed(monkeypatch, native.TESTED_RELEASE)
    cls = native.leak_free_class(SimpleNamespace(StableDiffusion=_Binding, sd_image_t=_Image))
    assert cls is not _Binding and issubclass(cls, _Binding)
    pointer, keep = two_images()
    assert cls()._sd_image_t_p_to_images(pointer, 2, 1) == ["image", "image"]
    expected = [ctypes.addressof(buffer) for buffer in keep[:2]] + [ctypes.addressof(keep[2])]
    assert freed == expected


@pytest.mark.parametrize("version", ["0.4.8", "0.4.7.post1", "0.5.0", None])
def test_another_release_is_not_patched_and_says_why(
    monkeypatch: pytest.MonkeyPatch,
    freed: list[int | None],
    caplog: pytest.LogCaptureFixture,
    version: str | None,
) -> None:
    installed(monkeypatch, version)
    with caplog.at_level(logging.WARNING, logger="localimg.ggml.native"):
        cls = native.leak_free_class(SimpleNamespace(StableDiffusion=_Binding, sd_image_t=_Image))
    assert cls is _Binding  # the binding's own class: it keeps its own buffer handling
    pointer, _keep = two_images()
    cls()._sd_image_t_p_to_images(pointer, 2, 1)
    assert freed == []
    [record] = caplog.records
    found = f"{native.DISTRIBUTION} {version}" if version else "of unknown version"
    assert found in record.getMessage()
    assert f"is not {native.TESTED_RELEASE}, the release localimg is tested with" in (
        record.getMessage()
    )


def test_the_version_is_read_once_per_process(
    monkeypatch: pytest.MonkeyPatch, freed: list[int | None]
) -> None:
    installed(monkeypatch, "0.4.8")
    binding = SimpleNamespace(StableDiffusion=_Binding, sd_image_t=_Image)
    first = native.leak_free_class(binding)
    installed(monkeypatch, native.TESTED_RELEASE)
    assert native.leak_free_class(binding) is first


def test_the_installed_binding_is_the_pinned_release() -> None:
    """pyproject pins the ggml extra to the tested release: an install that has the binding has
    that one (skipped where the ggml extra is not installed)."""
    version = native.binding_version()
    if version is None:
        pytest.skip(f"{native.DISTRIBUTION} is not installed")
    assert native.untested_binding() is None, version
