"""The Hugging Face hub: its endpoint, file metadata, cached downloads and its errors in words.

huggingface_hub raises a family of exceptions for gated, missing and unreachable repos; every
download caller (file downloads, gallery snapshot listings) turns them into a DownloadError
through `hub_error`, with the words of _util/hub_errors.py that model loading uses too, so a user
sees one wording whichever command touched the hub.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from localimg._util.hub_errors import hub_problem
from localimg.download.progress import Progress
from localimg.download.uris import SHA256, Source
from localimg.errors import DownloadError


class Cancelled(Exception):
    """Internal: the download was stopped (Ctrl-C or job cancel); partial files stay."""


def hub_endpoint() -> str | None:
    """HF_ENDPOINT read now (huggingface_hub reads it once at import)."""
    return os.environ.get("HF_ENDPOINT") or None


def hub_error(exc: Exception, subject: str, action: str = "download") -> DownloadError:
    """huggingface_hub's exception `exc` about `subject` in the words of _util/hub_errors.py, or
    what went wrong while trying to `action` it."""
    problem = hub_problem(exc, subject)
    if problem is not None:
        return DownloadError(problem)
    if isinstance(exc, OSError | ValueError):
        return DownloadError(f"cannot {action} {subject}: {exc}")
    return DownloadError(f"cannot {action} {subject}: {type(exc).__name__}: {exc}")


def _tqdm_forwarder(name: str, progress: Progress, cancel: threading.Event) -> type:
    """A tqdm class that reports huggingface_hub's byte counts to `progress`, drawing nothing."""
    from tqdm.auto import tqdm

    class Forward(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            progress.start(name, kwargs.get("total"), int(kwargs.get("initial") or 0))

        def update(self, n: float | None = 1) -> bool | None:
            if cancel.is_set():
                raise Cancelled
            progress.advance(name, int(n or 0))
            return None

    return Forward


def hub_download(
    source: Source,
    name: str | None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> str:
    """Download one hub file into the huggingface_hub cache; return its cached path."""
    from huggingface_hub import hf_hub_download

    kwargs: dict[str, Any] = {"revision": source.revision, "endpoint": hub_endpoint()}
    if progress is not None and name is not None:
        kwargs["tqdm_class"] = _tqdm_forwarder(name, progress, cancel or threading.Event())
    try:
        return str(hf_hub_download(source.location, source.path_in_repo, **kwargs))
    except Cancelled:
        raise
    except Exception as exc:  # huggingface_hub's errors, HTTP errors, OSError
        raise hub_error(exc, str(source)) from None


def hub_file_info(source: Source) -> tuple[int | None, str | None]:
    """(size, sha256) the hub reports for a file; (None, None) offline or when unknown."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url

    if constants.is_offline_mode():
        return None, None
    endpoint = hub_endpoint()
    url = hf_hub_url(
        source.location, source.path_in_repo, revision=source.revision, endpoint=endpoint
    )
    try:
        meta = get_hf_file_metadata(url, endpoint=endpoint)
    except Exception:  # the download itself will report the real problem
        return None, None
    etag = (meta.etag or "").strip('"').lower()
    return meta.size, etag if SHA256.match(etag) else None
