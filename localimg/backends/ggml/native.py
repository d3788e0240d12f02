"""Safe use of stable-diffusion-cpp-python 0.4.7: every defect seen in it, worked around here.

- Progress: the library installs a temporary C callback per call and leaves the process-global
  pointer dangling, so a later call without a callback segfaults, and without any callback the C
  code prints progress bars to stdout (it would corrupt `--json`). Here one callback lives for
  the whole process and dispatches to the current Python handler; it is re-installed after every
  call, so a pointer set by anyone else never outlives its call.
- Logging: `verbose=False` redirects file descriptors 1 and 2 of the whole process around each
  call (a server would lose its own output). Always `verbose=True`, with the library's log callback
  replaced by one that feeds Python logging (`localimg.ggml.native`), and the wrapper's own
  `print()` of system info silenced.
- A model that fails to load gives a context pointer that is NULL but not None: no exception, and
  `close()` then frees NULL and segfaults. `load` checks the pointer and raises instead.
- Each generated image's pixel buffer (malloc'd in C) and the array holding them are never freed:
  `_LeakFreeModel` frees them once the pixels are copied into Python. Only on the tested release
  (`TESTED_RELEASE`, which pyproject's `ggml` extra pins): a release that frees them itself would
  have them freed twice (heap corruption), so on any other release the binding's own class is
  used, unpatched, and a warning names the tested release (memory may then grow per image).
- The wrapper passes `eta=0.0` unless told otherwise, where the C library's default (infinity)
  means "1 for ancestral samplers": euler_a was silently plain euler. The backend always passes
  eta (infinity unless the YAML or request sets one).
- `StableDiffusion(embedding_paths=[...])` raises AttributeError: its `__init__` reads
  `self._embedding_items`, which it never sets. `_LeakFreeModel` sets it before the parent's
  `__init__` (so textual inversions load only on the tested release).
- Its hires fix builds `sd_hires_params_t(path=..., width=..., height=...)`, but the structure's
  fields are `model_path`, `target_width` and `target_height`: ctypes keeps the unknown keywords
  as plain attributes, so a hires size was silently replaced by `hires_scale`. `install` puts a
  subclass in the package's namespace (where the wrapper looks it up) that sets the real fields.
- Callbacks and the context are process-global and not thread-safe: `NATIVE_LOCK` serialises every
  native call in the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import Any

from localimg.errors import BackendError

log = logging.getLogger("localimg.ggml.native")

DISTRIBUTION = "stable-diffusion-cpp-python"
# The one release whose internals this module patches (pyproject pins the ggml extra to it).
TESTED_RELEASE = "0.4.7"

NATIVE_LOCK = threading.RLock()

# stable-diffusion.cpp's sd_log_level_t → Python logging levels.
_LEVELS = {0: logging.DEBUG, 1: logging.INFO, 2: logging.WARNING, 3: logging.ERROR}

StepHandler = Callable[[int, int], None]

_state: dict[str, Any] = {
    "installed": False,
    "handler": None,  # StepHandler for the running call, or None
    "capture": None,  # list[tuple[int, str]] collecting log lines during a load
    "log_cb": None,  # the ctypes callbacks: kept referenced for the life of the process
    "progress_cb": None,
}


def _on_log(level: int, text: bytes | None, _data: Any) -> None:
    try:
        message = (text or b"").decode("utf-8", errors="replace").rstrip()
        if not message:
            return
        capture = _state["capture"]
        if capture is not None:
            capture.append((level, message))
        log.log(_LEVELS.get(level, logging.INFO), "%s", message)
    except Exception:  # never let an exception cross into C
        pass


def _on_progress(step: int, steps: int, _time: float, _data: Any) -> None:
    handler = _state["handler"]
    if handler is None:
        return
    try:
        handler(int(step), int(steps))
    except Exception:
        log.exception("progress handler failed")


def install() -> Any:
    """Import the library with localimg's log and progress callbacks; return the module."""
    import stable_diffusion_cpp as sd

    with NATIVE_LOCK:
        if not _state["installed"]:
            _state["log_cb"] = sd.sd_log_callback(_on_log)
            _state["progress_cb"] = sd.sd_progress_callback(_on_progress)
            sd.sd_set_log_callback(_state["log_cb"], ctypes.c_void_p(0))
            fix_hires_params(sd)
            _state["installed"] = True
        reset_progress(sd)
    return sd


# The wrapper's keywords for sd_hires_params_t → the structure's fields.
_HIRES_FIELDS = {"path": "model_path", "width": "target_width", "height": "target_height"}


def fix_hires_params(sd: Any) -> None:
    """Make the wrapper's hires keywords reach the structure's real fields (see the notes);
    nothing on a binding whose structure has the fields it names."""
    base = getattr(sd, "sd_hires_params_t", None)
    if base is None or getattr(base, "_localimg_fixed", False):
        return
    names = {entry[0] for entry in getattr(base, "_fields_", ())}
    if "width" in names or "target_width" not in names:
        return

    class _HiresParams(base):  # type: ignore[misc, valid-type]
        _localimg_fixed = True

        def __init__(self, **kw: Any) -> None:
            for given, real in _HIRES_FIELDS.items():
                if given in kw:
                    kw[real] = kw.pop(given)
            super().__init__(**kw)

    sd.sd_hires_params_t = _HiresParams


def reset_progress(sd: Any) -> None:
    """Point the global progress callback at the process-lived dispatcher (never dangling)."""
    sd.sd_set_progress_callback(_state["progress_cb"], ctypes.c_void_p(0))


def quiet_wrapper() -> None:
    """The wrapper `print()`s system info on every call when verbose: send that nowhere."""
    logging.getLogger("stable-diffusion-cpp-python").setLevel(logging.CRITICAL + 10)


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send what the C library writes to stdout (a bare newline after loading) to stderr.

    Only file descriptor 1 moves, and only for the duration: nothing is lost, and
    `localimg generate --json` keeps a clean stdout. (Not the wrapper's verbose=False, which
    silences both streams of the whole process.)
    """
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no stdout at all
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


@contextmanager
def capturing() -> Iterator[list[tuple[int, str]]]:
    """Collect the library's log lines (level, text) while loading, to explain a failure."""
    lines: list[tuple[int, str]] = []
    _state["capture"] = lines
    try:
        yield lines
    finally:
        _state["capture"] = None


@contextmanager
def progress_to(handler: StepHandler) -> Iterator[None]:
    _state["handler"] = handler
    try:
        yield
    finally:
        _state["handler"] = None


def _libc_free() -> Callable[[int | None], None] | None:
    """libc's free(), where the library's malloc is the same C runtime's (Linux, macOS)."""
    if sys.platform not in ("linux", "darwin"):
        return None
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else ctypes.CDLL(None)
    except OSError:
        return None
    free = libc.free
    free.argtypes = [ctypes.c_void_p]
    free.restype = None
    return free


_FREE = _libc_free()


def free_c_buffer(pointer: int | None) -> None:
    """Give back a buffer the library malloc'ed and left to its caller (where libc's free() is
    reachable; elsewhere the buffer leaks, as it would without localimg)."""
    if _FREE is not None:
        _FREE(pointer)


def binding_version() -> str | None:
    """The installed stable-diffusion-cpp-python's version (None: no distribution metadata)."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None


def untested_binding() -> str | None:
    """Why the installed binding must not be patched, or None when it is the tested release."""
    version = binding_version()
    if version == TESTED_RELEASE:
        return None
    found = f"{DISTRIBUTION} {version}" if version else f"{DISTRIBUTION} of unknown version"
    return (
        f"{found} is not {TESTED_RELEASE}, the release localimg is tested with: its image "
        "buffers are left to the library (freeing them here as on "
        f"{TESTED_RELEASE} could free them twice), so memory may grow with every image; "
        f"install {DISTRIBUTION}=={TESTED_RELEASE} (pip install 'localimg[ggml]')"
    )


def leak_free_class(sd: Any) -> type:
    """A StableDiffusion subclass that frees the C image buffers after copying their pixels.

    On a release other than TESTED_RELEASE: the binding's own class, unpatched (with a warning).
    """
    cached = _state.get("model_cls")
    if cached is not None:
        return cached
    reason = untested_binding()
    if reason is not None:
        log.warning("%s", reason)
        _state["model_cls"] = sd.StableDiffusion
        return sd.StableDiffusion

    class _LeakFreeModel(sd.StableDiffusion):
        def __init__(self, *args: Any, embedding_paths: list[str] | None = None, **kw: Any) -> None:
            # 0.4.7's __init__ reads self._embedding_items, which it never sets (see the notes)
            self._embedding_items = [
                sd.sd_embedding_t(name=Path(p).stem.encode(), path=p.encode())
                for p in embedding_paths or []
            ]
            super().__init__(*args, embedding_paths=embedding_paths or [], **kw)

        def _sd_image_t_p_to_images(self, c_images: Any, count: int, upscale_factor: int) -> Any:
            if not c_images:
                raise RuntimeError("stable-diffusion.cpp returned no images (see the log)")
            images = super()._sd_image_t_p_to_images(c_images, count, upscale_factor)
            if _FREE is not None and upscale_factor <= 1:
                array = ctypes.cast(c_images, ctypes.POINTER(sd.sd_image_t * count)).contents
                for item in array:
                    if item.data:
                        _FREE(ctypes.cast(item.data, ctypes.c_void_p).value)
                        item.data = None
                _FREE(ctypes.cast(c_images, ctypes.c_void_p).value)
            return images

    _state["model_cls"] = _LeakFreeModel
    return _LeakFreeModel


def context_ok(model: Any) -> bool:
    """True when the model's native context really exists (a failed load leaves NULL)."""
    inner = getattr(model, "_model", None)
    return bool(inner is not None and inner.model)


def discard_failed(model: Any) -> None:
    """Make a failed model safe to drop: never let its close() free a NULL context."""
    inner = getattr(model, "_model", None)
    if inner is not None:
        inner.model = None


def close(model: Any) -> None:
    with NATIVE_LOCK:
        if not context_ok(model):
            discard_failed(model)
        model.close()


def native_call(
    sd: Any,
    run: Callable[[], list[Any]],
    on_step: StepHandler,
    what: str,
    *contexts: AbstractContextManager[Any],
) -> list[Any]:
    """One library call under the native lock, its progress (and preview) callbacks set; the
    library's exceptions and empty outputs become BackendError."""
    with NATIVE_LOCK, progress_to(on_step), ExitStack() as stack:
        for context in contexts:
            stack.enter_context(context)
        try:
            output = run()
        except (ValueError, RuntimeError) as exc:
            raise BackendError(f"stable-diffusion.cpp failed: {exc}") from None
        finally:
            reset_progress(sd)
    if not output:
        raise BackendError(f"stable-diffusion.cpp returned no {what} (see the log)")
    return list(output)
