"""What the A1111 API remembers between requests: its current model and options, and its runs.

A1111 holds one checkpoint for the whole server (`sd_model_checkpoint`), which `POST
/sdapi/v1/options` switches; localimg serves many models, so the A1111 routes keep their own
current model (each request may still pick another with `override_settings`). A *run* is one
txt2img/img2img request: `n_iter` engine jobs one after another. `/progress` reports the oldest
run still going (A1111 runs one request at a time), `/interrupt` stops it and `/skip` ends its
current batch; both cancel the engine job (`Job.cancel`), which stops within one step.

One `A1111State` belongs to one app (created by `a1111.routes()`), never to the module.
"""

from __future__ import annotations

import base64
import io
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL.Image import Image

    from localimg.engine import Job
    from localimg.requests import ProgressEvent


@dataclass
class Run:
    """One A1111 generation request and where it stands."""

    id: str
    n_iter: int
    kind: str  # "txt2img" or "img2img"
    started: float = field(default_factory=time.monotonic)
    timestamp: str = field(default_factory=lambda: time.strftime("%Y%m%d%H%M%S"))
    job_no: int = 0  # batches finished
    job: Job | None = None
    interrupted: bool = False
    skipped: bool = False
    step: int = 0
    steps: int = 0
    preview: Image | None = None

    def listener(self, event: ProgressEvent) -> None:
        """The engine job's progress (called from its thread): step counts and previews."""
        if event.phase == "step":
            self.step, self.steps = event.step, event.total
            if event.preview is not None:
                self.preview = event.preview

    def interrupt(self) -> None:
        self.interrupted = True
        if self.job is not None:
            self.job.cancel()

    def skip(self) -> None:
        self.skipped = True
        if self.job is not None:
            self.job.cancel()


@dataclass
class A1111State:
    """The A1111 routes' own state: current model, options set through the API, runs."""

    model: str | None = None  # None: the server's default model
    clip_stop: int = 1  # CLIP_stop_at_last_layers (A1111 counting: 1 = no skip)
    preview_every: int = 10  # show_progress_every_n_steps (0: no previews)
    samples_format: str = "png"
    runs: list[Run] = field(default_factory=list)
    saved: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def start(self, kind: str, n_iter: int, task_id: str | None) -> Run:
        with self._lock:
            run = Run(id=task_id or f"task({next(self._ids)})", n_iter=n_iter, kind=kind)
            self.runs.append(run)
            return run

    def finish(self, run: Run) -> None:
        with self._lock:
            if run in self.runs:
                self.runs.remove(run)

    def current(self) -> Run | None:
        with self._lock:
            return self.runs[0] if self.runs else None

    def job_count(self) -> int:
        with self._lock:
            return sum(run.n_iter - run.job_no for run in self.runs)

    def progress(self, skip_current_image: bool) -> dict[str, Any]:
        """GET /sdapi/v1/progress, computed as A1111's progressapi does."""
        run = self.current()
        state: dict[str, Any] = {
            "skipped": False,
            "interrupted": False,
            "stopping_generation": False,
            "job": "",
            "job_count": 0,
            "job_timestamp": "0",
            "job_no": 0,
            "sampling_step": 0,
            "sampling_steps": 0,
        }
        if run is None:
            return {
                "progress": 0.0,
                "eta_relative": 0.0,
                "state": state,
                "current_image": None,
                "textinfo": None,
                "current_task": None,
            }
        state.update(
            skipped=run.skipped,
            interrupted=run.interrupted,
            job=f"scripts_{run.kind}",
            job_count=self.job_count() + run.job_no,
            job_timestamp=run.timestamp,
            job_no=run.job_no,
            sampling_step=run.step,
            sampling_steps=run.steps,
        )
        progress = 0.01 + run.job_no / run.n_iter
        if run.steps:
            progress += run.step / run.steps / run.n_iter
        elapsed = time.monotonic() - run.started
        eta_relative = elapsed / progress - elapsed
        image = None
        if run.preview is not None and not skip_current_image:
            image = png_base64(run.preview)
        return {
            "progress": min(progress, 1.0),
            "eta_relative": eta_relative,
            "state": state,
            "current_image": image,
            "textinfo": None,
            "current_task": run.id,
        }


def png_base64(image: Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
