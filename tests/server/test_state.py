"""ServerState.close() and the bounded store of finished video jobs (no model needed)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from localimg.server.jobs.videos import VideoJob, VideoStore
from localimg.server.state import ServerState


def finished(index: int, at: float, folder: Path) -> VideoJob:
    entry = VideoJob(id=f"video_{index}", model="m", prompt="p", size="", seconds="")
    entry.status, entry.finished_at = "completed", at
    entry.path = folder / f"{entry.id}.mp4"
    entry.path.write_bytes(b"mp4")
    return entry


def test_finished_videos_are_bounded_oldest_first(tmp_path: Path) -> None:
    store = VideoStore(max_finished=3, ttl=1e12)
    running = VideoJob(id="video_running", model="m", prompt="p", size="", seconds="")
    store.add(running)
    entries = [finished(i, 1000.0 + i, tmp_path) for i in range(5)]
    for entry in entries:
        store.add(entry)
    store.prune(now=1010.0)
    assert {e.id for e in store.values()} == {"video_running", "video_2", "video_3", "video_4"}
    assert not entries[0].path.exists() and not entries[1].path.exists()  # type: ignore[union-attr]
    assert entries[4].path.exists()  # type: ignore[union-attr]


def test_finished_videos_expire_after_the_ttl(tmp_path: Path) -> None:
    store = VideoStore(max_finished=100, ttl=60)
    old, new = finished(1, 1000.0, tmp_path), finished(2, 1050.0, tmp_path)
    store.add(old)
    store.add(new)
    store.prune(now=1080.0)
    assert len(store) == 1
    assert old.path is not None and not old.path.exists()
    assert new.path is not None and new.path.exists()


class FakeJob:
    cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeInstallJobs:
    cancelled = False

    def cancel_all(self) -> None:
        self.cancelled = True


def test_close_cancels_install_jobs_video_jobs_and_tasks() -> None:
    async def scenario() -> tuple[ServerState, Any, FakeJob, list[asyncio.Task[None]]]:
        state = ServerState(settings=None, engine=None, output_dir=None, files_path="/generated")  # type: ignore[arg-type]
        state.install_jobs = FakeInstallJobs()  # type: ignore[assignment]
        entry = VideoJob(id="video_x", model="m", prompt="p", size="", seconds="")
        job = FakeJob()
        entry.job = job  # type: ignore[assignment]
        state.videos.add(entry)
        video_task = asyncio.create_task(asyncio.sleep(60))
        background = asyncio.create_task(asyncio.sleep(60))
        state.video_tasks.add(video_task)
        state.tasks.append(background)
        state.close()
        await asyncio.sleep(0)
        return state, state.install_jobs, job, [video_task, background]

    state, installs, job, tasks = asyncio.run(scenario())
    assert state.shutting_down and installs.cancelled and job.cancelled
    assert all(task.cancelled() for task in tasks)
