"""The one error tree of localimg.

Every failure a user can cause or meet is raised as a `LocalimgError` subclass at the point where it
happens. Each class knows how it is shown: `cli.py` prints `message` on one line and exits with
`exit_code`; the server answers `http_status` with OpenAI's error shape built from `error_type`,
`param` and `code`. Nothing classifies errors by matching their text.
"""

from __future__ import annotations

from typing import Any


class LocalimgError(Exception):
    """Base class: a message meant for the user, plus how to present it."""

    exit_code: int = 1
    http_status: int = 500
    error_type: str = "server_error"
    default_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.default_code
        self.headers = headers or {}

    def to_openai(self) -> dict[str, Any]:
        """The body of an OpenAI-style error response."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments are lost by the default pickling; worker processes send errors
        # back to the parent, so keep them.
        return (_rebuild, (type(self), self.message, self.param, self.code, self.headers))


def _rebuild(
    cls: type[LocalimgError],
    message: str,
    param: str | None,
    code: str | None,
    headers: dict[str, str],
) -> LocalimgError:
    return cls(message, param=param, code=code, headers=headers)


class ConfigError(LocalimgError):
    """A model YAML file or a setting is invalid."""

    exit_code = 2
    http_status = 500
    error_type = "server_error"
    default_code = "invalid_model_config"


class InvalidRequest(LocalimgError):
    """A request field is wrong; the message names it and what is allowed."""

    exit_code = 2
    http_status = 400
    error_type = "invalid_request_error"
    default_code = "invalid_value"


class ModelNotFound(LocalimgError):
    """No model matches a reference; the message lists the known names."""

    exit_code = 3
    http_status = 404
    error_type = "invalid_request_error"
    default_code = "model_not_found"


class ModelUnavailable(LocalimgError):
    """A model exists by name but its files cannot be had (offline, missing file, gated repo)."""

    exit_code = 3
    http_status = 503
    error_type = "server_error"
    default_code = "model_unavailable"


class BackendNotInstalled(LocalimgError):
    """The backend a model needs is not installed (its extra is missing)."""

    exit_code = 4
    http_status = 501
    error_type = "server_error"
    default_code = "backend_not_installed"


class BackendError(LocalimgError):
    """The backend failed while loading or generating."""

    exit_code = 5
    http_status = 500
    error_type = "server_error"
    default_code = "backend_error"


class ReplicaFailed(LocalimgError):
    """A Ray Serve replica died (or was lost) while it ran the request (`serve --ray`).

    502: the server itself is fine and Ray starts a new replica; the request may be sent again.
    """

    exit_code = 5
    http_status = 502
    error_type = "server_error"
    default_code = "replica_failed"


class Busy(LocalimgError):
    """The model's queue is full; try again later."""

    exit_code = 6
    http_status = 429
    error_type = "rate_limit_error"
    default_code = "queue_full"


class ModelLoading(LocalimgError):
    """The model is still loading or the server is shutting down."""

    exit_code = 6
    http_status = 503
    error_type = "server_error"
    default_code = "unavailable"


class Cancelled(LocalimgError):
    """The job was cancelled (client gone, Ctrl-C, shutdown)."""

    exit_code = 130
    http_status = 499
    error_type = "cancelled"
    default_code = "cancelled"


class JobTimeout(LocalimgError):
    """The job ran past its time limit."""

    exit_code = 7
    http_status = 504
    error_type = "server_error"
    default_code = "timeout"


class Unauthorized(LocalimgError):
    """A missing or wrong API key (server)."""

    exit_code = 2
    http_status = 401
    error_type = "invalid_request_error"
    default_code = "invalid_api_key"


class PayloadTooLarge(LocalimgError):
    """A request body, uploaded or fetched file, or decoded image is over its limit."""

    exit_code = 2
    http_status = 413
    error_type = "invalid_request_error"
    default_code = "payload_too_large"


class UnreadableImage(LocalimgError):
    """An input image cannot be decoded."""

    exit_code = 2
    http_status = 422
    error_type = "invalid_request_error"
    default_code = "invalid_image"


class GalleryError(LocalimgError):
    """A gallery index or entry is invalid or unsafe (bad file name, missing template)."""

    exit_code = 2
    http_status = 400
    error_type = "invalid_request_error"
    default_code = "invalid_gallery_entry"


class DownloadError(LocalimgError):
    """A model file could not be fetched, failed its checksum, or does not fit on the disk."""

    exit_code = 8
    http_status = 502
    error_type = "server_error"
    default_code = "download_failed"


class InsufficientMemory(LocalimgError):
    """A model does not fit in the memory budget (or the machine) even with idle models evicted.

    Raised before loading, so the request fails cleanly instead of the process being OOM-killed.
    """

    exit_code = 9
    http_status = 507
    error_type = "server_error"
    default_code = "insufficient_memory"
