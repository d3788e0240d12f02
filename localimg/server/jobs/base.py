"""What every background job of the server shares: an image job (`/v1/images/jobs`) and a video
job (`/v1/videos`) are both a record around one engine job, answered 202 at once and polled.

The base holds what they have in common, so that the two kinds cannot drift apart: the engine
job while it runs (dropped once finished, so its result's images are not kept alive), when it
finished (the store's bound), the error path (a `LocalimgError` in the kind's error shape,
anything unexpected logged and still reported, so a job never stays running after a crash), and
cancel. Each kind keeps its own JSON (`public`) and error shape (`error_of`): OpenAI's image job
and video objects differ, and clients read them as they are.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from localimg.errors import LocalimgError

if TYPE_CHECKING:
    from localimg.engine import Engine
    from localimg.engine import Job as EngineJob

log = logging.getLogger("localimg.server")


@dataclass(kw_only=True)
class Job:
    """One background job: its id and model, the engine job while it runs, its outcome."""

    label: ClassVar[str] = "job"  # how the log names it ("image job", "video")

    id: str
    model: str
    created_at: int = field(default_factory=lambda: int(time.time()))
    job: EngineJob | None = None  # dropped once finished (its result's images are let go)
    finished_at: float | None = None  # time.time() once finished (the store's bound)
    error: dict[str, Any] | None = None

    def files(self) -> list[Path]:
        """What to delete with the job (the store calls this when it drops one)."""
        return []

    def public(self, engine: Engine) -> dict[str, Any]:
        """The job object as GET and the list answer it."""
        raise NotImplementedError

    def set_status(self, status: str) -> None:
        raise NotImplementedError

    def error_of(self, exc: Exception) -> dict[str, Any]:
        """The kind's `error` object for a failure (`exc` may be unexpected)."""
        raise NotImplementedError

    def fail(self, exc: Exception) -> None:
        """The one error path: record `exc` in the kind's shape and mark the job failed."""
        if not isinstance(exc, LocalimgError):  # a bug: the traceback goes to the log
            log.error("%s %s failed", self.label, self.id, exc_info=exc)
        self.error = self.error_of(exc)
        self.set_status("failed")

    def cancel(self) -> None:
        """Stop the engine job: at once while queued, within a step while running."""
        if self.job is not None:
            self.job.cancel()

    def close(self) -> None:
        """Finished: let the engine job go and start the store's clock."""
        self.job = None
        self.finished_at = time.time()
