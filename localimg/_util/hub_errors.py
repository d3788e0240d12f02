"""huggingface_hub's exceptions in words: the one table every caller of the hub shares (here, below
both download/ and backends/, which may not import each other).

File downloads, gallery snapshot listings and the diffusers backend's model loading all reach the
hub through huggingface_hub, which raises a family of exceptions for gated, missing and unreachable
repos. They say the same thing in the same words wherever it happens; each caller only wraps the
words in its own error class (DownloadError, ModelUnavailable) and adds its own fallback.

The table is ordered, narrowest class first: huggingface_hub derives GatedRepoError from
RepositoryNotFoundError and LocalEntryNotFoundError (a cache miss while offline) from
EntryNotFoundError, so checked the other way round a gated repo would read as missing and an
offline cache miss as "no such file in the repository". An offline miss says which it is: offline
mode switched on (HF_HUB_OFFLINE), or a hub that did not answer.
"""

from __future__ import annotations

from typing import Any


def _table() -> tuple[tuple[Any, str], ...]:
    """(exception class or classes, message) rows, in the order they must be tried; the message
    takes `subject` and `detail` (the exception's first line)."""
    from huggingface_hub import errors as hf_errors

    return (
        (
            hf_errors.GatedRepoError,
            "{subject} is gated: accept its license on the hub and set HF_TOKEN",
        ),
        (
            hf_errors.RepositoryNotFoundError,
            "{subject}: repository not found (or private: set HF_TOKEN)",
        ),
        (hf_errors.RevisionNotFoundError, "{subject}: revision not found"),
        (
            (hf_errors.LocalEntryNotFoundError, hf_errors.OfflineModeIsEnabled),
            "{subject} is not in the local Hugging Face cache and the hub cannot be reached "
            "({offline})",
        ),
        (hf_errors.EntryNotFoundError, "{subject}: no such file in the repository ({detail})"),
    )


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text, or its class name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def hub_problem(exc: BaseException, subject: str, offline_hint: str = "") -> str | None:
    """The words for huggingface_hub's exception `exc` about `subject`; None when `exc` is none of
    the hub's known failures (the caller then says it its own way). `offline_hint` follows the
    offline message: what the caller's user can do instead (e.g. name a local model)."""
    from huggingface_hub import errors as hf_errors

    for classes, words in _table():
        if isinstance(exc, classes):
            message = words.format(subject=subject, detail=first_line(exc), offline=_why_offline())
            offline = isinstance(
                exc, hf_errors.LocalEntryNotFoundError | hf_errors.OfflineModeIsEnabled
            )
            return f"{message}. {offline_hint}" if offline and offline_hint else message
    return None


def offline_mode() -> bool:
    """Whether huggingface_hub's offline mode is on (HF_HUB_OFFLINE, read at its import)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _why_offline() -> str:
    """Why the hub was not asked: offline mode, or it did not answer."""
    if offline_mode():
        return "offline mode is on: HF_HUB_OFFLINE=1"
    return "no network, or the hub did not answer"
