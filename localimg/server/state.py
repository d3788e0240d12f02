"""What the server holds while it runs: one typed object, set as `app.state` by `create_app`.

Every attribute exists from the start (no attribute created on first use), and `close()` (the
lifespan's last step) stops what the server started: background tasks, video and image jobs
and the gallery's install threads (they stop at their next download chunk).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localimg.server.jobs.image_job import MAX_FINISHED_IMAGE_JOBS, ImageJob
from localimg.server.jobs.store import JobStore
from localimg.server.jobs.videos import VideoStore

if TYPE_CHECKING:
    from localimg.engine import Engine
    from localimg.gallery.install import InstallJobs
    from localimg.server.metrics import ServerMetrics


@dataclass
class ServerState:
    settings: Any  # app.ServerSettings (app imports this module)
    engine: Engine
    output_dir: Path | None
    files_path: str
    preloading: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)  # preloads that failed: name → why
    shutting_down: bool = False
    videos: VideoStore = field(default_factory=VideoStore)
    video_tasks: set[asyncio.Task[None]] = field(default_factory=set)
    image_jobs: JobStore[ImageJob] = field(
        default_factory=lambda: JobStore(max_finished=MAX_FINISHED_IMAGE_JOBS)
    )
    image_job_tasks: set[asyncio.Task[None]] = field(default_factory=set)
    install_jobs: InstallJobs | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)  # cleanup loop, preloads
    metrics: ServerMetrics | None = None  # /metrics (set by create_app)

    def close(self) -> None:
        """Refuse new work; cancel install jobs, video and image jobs (and their engine jobs),
        tasks."""
        self.shutting_down = True
        if self.install_jobs is not None:
            self.install_jobs.cancel_all()
        for entry in self.videos.values():
            if entry.job is not None:
                entry.job.cancel()
        for image_job in self.image_jobs.values():
            if image_job.job is not None:
                image_job.job.cancel()
        for task in [*self.video_tasks, *self.image_job_tasks, *self.tasks]:
            task.cancel()
