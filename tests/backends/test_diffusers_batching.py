"""DiffusersBackend.generate_batch through the engine: queued requests for one model run as one
pipeline call, each keeping its own prompt, seeds and images."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from localimg.engine import Engine, EngineSettings, Job
from localimg.errors import Cancelled
from localimg.requests import ImageRequest, ImageResult, ProgressEvent
from tests.support.server_support import write_model

BASE = ImageRequest(prompt="a lighthouse", steps=3, width=64, height=64)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, tiny_sd: Path) -> Iterator[Engine]:
    folder = tmp_path_factory.mktemp("batch-models")
    write_model(folder, "tiny", tiny_sd)
    engine = Engine(EngineSettings(models_path=folder, max_batch=4, keep_alive=None))
    yield engine
    engine.close()


def _blocked(engine: Engine) -> tuple[Job, threading.Event]:
    """A job that holds the model at its first step, so that the next ones queue up."""
    started, release = threading.Event(), threading.Event()

    def hold(event: ProgressEvent) -> None:
        if event.phase == "step":
            started.set()
            release.wait(120)

    job = engine.submit("tiny", BASE.with_(seed=99), hold)
    assert started.wait(120)
    return job, release


def pixels(result: ImageResult) -> list[np.ndarray]:
    return [np.asarray(img.convert("RGB"), dtype=np.int16) for img in result.images]


def test_queued_requests_run_as_one_batch_with_their_own_prompts_and_seeds(
    engine: Engine,
) -> None:
    requests = [
        BASE.with_(prompt="a red boat", seed=1),
        BASE.with_(prompt="a green field", seed=2, n=2),
        BASE.with_(prompt="a red boat", seed=5),
        BASE.with_(prompt="a tower", seed=7, width=128),  # another size: runs in its own batch
    ]
    holder, release = _blocked(engine)
    jobs = [engine.submit("tiny", request) for request in requests]
    release.set()
    holder.result(120)
    batched = [job.result(300) for job in jobs]
    assert [r.timings["batch"] for r in batched[:3]] == [3.0, 3.0, 3.0]
    assert "batch" not in batched[3].timings
    assert [r.seeds for r in batched] == [[1], [2, 3], [5], [7]]
    assert [len(r.images) for r in batched] == [1, 2, 1, 1]
    assert [r.request.prompt for r in batched if r.request] == [q.prompt for q in requests]

    alone = [engine.generate("tiny", request) for request in requests[:3]]
    assert all("batch" not in r.timings for r in alone)
    for together, single in zip(batched, alone, strict=False):
        for a, b in zip(pixels(together), pixels(single), strict=True):
            # Bit for bit: the pipeline's per-sample linear layers and the VAE decode do not
            # depend on the batch size (localimg/backends/diffusers/pipeline/batch_invariance.py).
            assert np.array_equal(a, b), int(np.abs(a - b).max())
    # ...and each request really got its own prompt and seed.
    first, third = pixels(batched[0])[0], pixels(batched[2])[0]
    assert np.abs(first - third).mean() > 5


def test_a_request_cancelled_inside_a_batch_does_not_stop_the_others(engine: Engine) -> None:
    holder, release = _blocked(engine)
    keep = engine.submit("tiny", BASE.with_(seed=11))
    drop = engine.submit("tiny", BASE.with_(seed=12))

    # Both are taken as one batch; cancel one as soon as the batch steps.
    def cancel_on_step(event: ProgressEvent) -> None:
        if event.phase == "step":
            drop.cancel()

    drop.listeners.append(cancel_on_step)
    release.set()
    holder.result(120)
    result = keep.result(300)
    assert result.timings["batch"] == 2.0 and len(result.images) == 1
    with pytest.raises(Cancelled):
        drop.result(300)
