"""The messages a worker process and its parent exchange over their pipe (worker_*.py).

Each message is a small frozen dataclass, so both sides `match` on its class and a field is
named, not numbered; they cross the pipe pickled, so they hold only picklable values (requests,
results, progress events, LocalimgErrors).

Parent → child: `Load`, `RunJob`, `RunBatch`, `Cancel`, `Stop`.
Child → parent: `Loaded`, `Progress`, `Result`, `Failure` (about a job, or with no job id about
a `Load`), `MemoryReport` (only where CUDA is in use: after a load and before each answer).
"""

from __future__ import annotations

from dataclasses import dataclass

from localimg.requests import ImageRequest, ImageResult, ProgressEvent

# -- parent → child ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """Load the model now (`--preload`, or again after a crash), without a job."""


@dataclass(frozen=True)
class RunJob:
    """Run one job; the child answers with `Progress` events and one `Result` or `Failure`."""

    job_id: str
    request: ImageRequest


@dataclass(frozen=True)
class RunBatch:
    """Run several jobs in one pipeline call (batching.py); each is answered by its id."""

    jobs: tuple[tuple[str, ImageRequest], ...]


@dataclass(frozen=True)
class Cancel:
    """Cancel a job: it stops at its next step (read by the child's reader thread at once)."""

    job_id: str


@dataclass(frozen=True)
class Stop:
    """End the worker: its running jobs are cancelled and the slot closed."""


ToChild = Load | RunJob | RunBatch | Cancel | Stop

# -- child → parent ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Loaded:
    """The model is loaded: its description (/v1/models) and how long the load took."""

    describe: dict[str, str]
    seconds: float | None


@dataclass(frozen=True)
class Progress:
    """A job's progress event (previews included), relayed to the parent's Job."""

    job_id: str
    event: ProgressEvent


@dataclass(frozen=True)
class Result:
    """A job's result."""

    job_id: str
    result: ImageResult


@dataclass(frozen=True)
class Failure:
    """A job's error, or (job_id None) the error of a `Load`."""

    job_id: str | None
    error: BaseException  # a LocalimgError: the child wraps any other (as_backend_error)


@dataclass(frozen=True)
class MemoryReport:
    """CUDA memory the worker's tensors hold, for /metrics and the memory budget."""

    cuda_bytes: int


ToParent = Loaded | Progress | Result | Failure | MemoryReport


def job_of(message: ToParent) -> str | None:
    """The job a message is about (None: about the worker or a load)."""
    match message:
        case Progress(job_id=job_id) | Result(job_id=job_id) | Failure(job_id=job_id):
            return job_id
        case _:
            return None
