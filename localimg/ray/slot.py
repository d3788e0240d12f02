"""`RaySlot`: an engine slot whose jobs run on a model's Ray Serve replicas (`serve --ray`).

The engine, the routes and the page do not know Ray is there: the slot keeps the engine's
contract (a bounded queue answered with 429 Busy at once, queue positions, running counts,
progress events with previews, cancel, job outcomes reported to the engine's events) while the
work goes to the model's deployment through a streaming handle call (ray/replica.py). Several
jobs run at once, one per replica; Ray's router holds the rest (`max_queued_requests`).

- Deploy: on the first job (or `--preload`), blocking that job as a model load would; keep-alive
  removes an idle model's deployment (its replicas and their memory) like an unload.
- Cancel: a watcher thread sees the job's cancel event and cancels the Ray call; Ray cancels the
  replica's coroutine, which cancels its job, which stops the backend at its next step.
- A replica that dies: a job it had not started is sent again (Ray routes it to a live
  replica); a job it was running fails with `ReplicaFailed` (502) and Ray starts a new replica.
- `replica_of(job_id)`: which replica made a job, for the X-Localimg-Replica header.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from localimg.engine import EngineEvents, Job, waiting_count, waiting_position
from localimg.errors import (
    BackendError,
    Busy,
    Cancelled,
    LocalimgError,
    ModelLoading,
    ReplicaFailed,
)
from localimg.ray.cluster import plan_for
from localimg.requests import ImageResult, ProgressEvent

if TYPE_CHECKING:
    from localimg.config import ModelConfig
    from localimg.engine import EngineSettings
    from localimg.ray.cluster import RayCluster, RayServeOptions

log = logging.getLogger("localimg.server.ray")

WATCH_SECONDS = 0.05  # how often the watcher looks for cancelled jobs
REMEMBERED_REPLICAS = 4096  # job id → replica, for the response header (oldest forgotten)


class RaySlot:
    """One model served by a Ray Serve deployment; an engine `Slot`."""

    def __init__(
        self,
        config: ModelConfig,
        settings: EngineSettings,
        cluster: RayCluster,
        options: RayServeOptions,
    ) -> None:
        self.config = config
        self.settings = settings
        self.cluster = cluster
        self.options = options
        self.backend_name = config.backend
        self.events = EngineEvents()  # the engine hands each slot its own
        self.before_load: Any = None  # the engine's admission check: not used (docs/server/ray.md)
        self.before_grow: Any = None  # nor its check for a request's ControlNet
        self.memory_need: Any = None
        self.last_used = time.monotonic()
        self.loads = 0
        self.last_load_seconds: float | None = None
        self.restarts = 0  # replicas seen dying under a request
        self.replicas: dict[str, int] = {}  # replica name → pid, as replicas report them
        self._handle: Any = None
        self._state = "unloaded"
        self._deploy_lock = threading.Lock()
        self._lock = threading.Lock()
        self._waiting: list[Job] = []  # submitted, not yet taken by a replica
        self._running: list[Job] = []
        self._calls: dict[str, tuple[Job, Any]] = {}  # job id → (job, Ray response)
        self._made_by: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._closed = threading.Event()
        self._watcher = threading.Thread(
            target=self._watch, name=f"localimg-ray-{config.name}", daemon=True
        )
        self._watcher.start()

    # -- what the engine, lifecycle, /v1/models and /metrics read --------------------------

    @property
    def state(self) -> str:
        """unloaded, loading (deploying) or loaded (deployed)."""
        return self._state

    @property
    def queue_depth(self) -> int:
        with self._lock:
            return waiting_count(self._waiting)

    def queue_position(self, job: Job) -> int | None:
        with self._lock:
            return waiting_position(self._waiting, job)

    @property
    def running_jobs(self) -> int:
        with self._lock:
            return len(self._running)

    @property
    def busy(self) -> bool:
        return self.queue_depth > 0 or self.running_jobs > 0

    @property
    def memory_bytes(self) -> int | None:
        return None  # the replicas' memory is on the cluster's hosts, not here

    @property
    def gpu_memory_bytes(self) -> int | None:
        return None

    @property
    def capacity(self) -> int:
        """Jobs the deployment runs at once: one per replica (autoscaling: its maximum)."""
        plan = plan_for(self.config, self.settings, self.options, has_gpus=False)
        return plan.autoscale[1] if plan.autoscale is not None else plan.replicas or 1

    def running_on(self) -> dict[str, str]:
        """Job id → the replica running it, for the jobs running now."""
        with self._lock:
            return {job.id: self._made_by.get(job.id, "?") for job in self._running}

    def replica_of(self, job_id: str) -> str | None:
        """The replica that ran a job (None if none did, or it is long forgotten)."""
        with self._lock:
            return self._made_by.get(job_id)

    # -- deployment ---------------------------------------------------------------------------

    def _deployed(self, job: Job | None = None) -> Any:
        """The deployment's handle, deploying the model first if needed (blocking)."""
        with self._deploy_lock:
            if self._handle is not None:
                return self._handle
            if self._closed.is_set():
                raise ModelLoading(f"model {self.config.name!r} is shutting down")
            self._state = "loading"
            if job is not None:
                job.emit(ProgressEvent("load", message=f"deploying {self.config.name} on Ray"))
            plan = plan_for(self.config, self.settings, self.options, self.cluster.has_gpus)
            runtime = replace(self.settings.runtime, threads=plan.threads, device=plan.device)
            replica_settings = replace(self.settings, runtime=runtime)
            began = time.monotonic()
            try:
                handle = self.cluster.deploy(self.config, replica_settings, plan)
                answer = handle.check.remote().result()
            except Exception as exc:
                log.warning("model %s: deploying failed", self.config.name, exc_info=True)
                self._state = "unloaded"
                self.cluster.delete(self.config.name)
                raise BackendError(
                    f"deploying model {self.config.name!r} on Ray Serve failed: "
                    f"{' '.join(str(exc).split())[:500]}",
                    code="ray_deploy_failed",
                ) from None
            if answer[0] == "error":  # the model cannot load: no deployment left behind
                self._state = "unloaded"
                self.cluster.delete(self.config.name)
                raise answer[1]
            self._handle = handle
            self._state = "loaded"
            self.loads += 1
            self.last_used = time.monotonic()
            self.last_load_seconds = self.last_used - began
            self.events.model_loaded(self.config.name, self.backend_name, self.last_load_seconds)
            return handle

    def load(self) -> None:
        """Deploy now (blocking): `--preload` and `POST /models/{name}/load`."""
        self._deployed()

    def unload(self, release_memory: bool = True) -> None:
        """Remove the deployment (after the jobs running now); the next job deploys again."""
        while self.running_jobs and not self._closed.is_set():
            time.sleep(WATCH_SECONDS)
        with self._deploy_lock:
            if self._handle is None:
                return
            self._handle = None
            self._state = "unloaded"
            self.replicas.clear()
        self.cluster.delete(self.config.name)

    def unload_if_idle(self) -> bool:
        if self.busy:
            return False
        self.unload()
        return True

    # -- jobs ---------------------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        with self._lock:
            if self._closed.is_set():
                raise ModelLoading(f"model {self.config.name!r} is shutting down")
            self._waiting = [j for j in self._waiting if not j.future.done()]
            # A job waits until a replica reports it started: free replicas take that many more.
            free = max(0, self.capacity - len(self._running))
            if len(self._waiting) >= self.settings.max_queue + free:
                self.events.job_rejected(self.config.name, self.backend_name)
                raise Busy(
                    f"model {self.config.name!r} has {len(self._waiting)} requests waiting for a "
                    f"free replica (the limit is {self.settings.max_queue}); try again shortly",
                    headers={"Retry-After": "5"},
                )
            self._waiting.append(job)
        self.events.watch(job, self.backend_name)
        job.emit(ProgressEvent("queued", message=f"{self.queue_depth} in queue"))
        threading.Thread(
            target=self._run, args=(job,), name=f"localimg-{job.id}", daemon=True
        ).start()

    def _run(self, job: Job) -> None:
        outcome: ImageResult | LocalimgError
        try:
            outcome = self._attempt(job)
        except LocalimgError as exc:
            outcome = exc
        except Exception as exc:
            log.exception("model %s: %s failed on Ray", self.config.name, job.id)
            outcome = BackendError(f"generation failed on Ray: {type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._calls.pop(job.id, None)
                if job in self._waiting:
                    self._waiting.remove(job)
                if job in self._running:
                    self._running.remove(job)
            self.last_used = time.monotonic()
        if job.future.done():
            return
        if isinstance(outcome, LocalimgError):
            job.future.set_exception(outcome)
        else:
            job.future.set_result(outcome)

    def _attempt(self, job: Job) -> ImageResult:
        for attempt in (1, 2):
            if job.cancel_event.is_set():
                raise Cancelled("the request was cancelled before it started")
            handle = self._deployed(job)
            state: dict[str, Any] = {"started": False}
            try:
                return self._call(handle, job, state)
            except ReplicaFailed:
                # A replica that died before it took the job cost it nothing: send it again.
                if state["started"] or attempt == 2:
                    raise
                log.warning("model %s: resending %s to another replica", self.config.name, job.id)
        raise AssertionError("unreachable")

    def _call(self, handle: Any, job: Job, state: dict[str, Any]) -> ImageResult:
        from ray.exceptions import RayActorError, TaskCancelledError
        from ray.serve.exceptions import BackPressureError

        response = handle.options(stream=True).run.remote(job.id, job.request)
        with self._lock:
            self._calls[job.id] = (job, response)
        replica = "?"
        try:
            for message in response:
                kind = message[0]
                if kind == "started":
                    replica, pid, self.backend_name = message[1], message[2], message[3]
                    state["started"] = True
                    self._started(job, replica, pid)
                elif kind == "progress":
                    job.emit(message[1])
                elif kind == "result":
                    result: ImageResult = message[1]
                    if job.started_at is not None:
                        result.timings["queue"] = job.started_at - job.submitted
                    return result
                elif kind == "error":
                    raise message[1]
        except BackPressureError:
            self.events.job_rejected(self.config.name, self.backend_name)
            raise Busy(
                f"model {self.config.name!r}: every replica is busy and Ray's queue is full "
                f"(max_queued_requests {self.settings.max_queue}); try again shortly",
                headers={"Retry-After": "5"},
            ) from None
        except TaskCancelledError:
            raise Cancelled("the request was cancelled") from None
        except RayActorError as exc:
            if job.cancel_event.is_set():
                raise Cancelled("the request was cancelled") from None
            return self._replica_died(job, replica, state, exc)
        raise ReplicaFailed(
            f"replica {replica} of model {self.config.name!r} ended the request without a result"
        )

    def _started(self, job: Job, replica: str, pid: int) -> None:
        with self._lock:
            self.replicas[replica] = pid
            self._made_by[job.id] = replica
            while len(self._made_by) > REMEMBERED_REPLICAS:
                self._made_by.popitem(last=False)
            if job in self._waiting:
                self._waiting.remove(job)
            taken = job.start()  # False: cancelled meanwhile (the watcher cancels the call)
            if taken:
                self._running.append(job)

    def _replica_died(
        self, job: Job, replica: str, state: dict[str, Any], exc: Exception
    ) -> ImageResult:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        with self._lock:
            self.replicas.pop(replica, None)
        if state["started"]:
            self.restarts += 1
            self.events.worker_restarted(self.config.name, self.backend_name, why)
            log.warning("model %s: replica %s died running %s", self.config.name, replica, job.id)
            raise ReplicaFailed(
                f"replica {replica} of model {self.config.name!r} died while generating "
                f"({why}); Ray starts a new one, other replicas keep answering: try again"
            )
        raise ReplicaFailed(f"a replica of model {self.config.name!r} died ({why})")

    def _watch(self) -> None:
        """Cancel the Ray call of every job whose cancel event is set (client gone, DELETE,
        interrupt, shutdown)."""
        cancelled: set[str] = set()
        while True:
            closed = self._closed.wait(WATCH_SECONDS)
            with self._lock:
                calls = list(self._calls.items())
            for job_id, (job, response) in calls:
                if job.cancel_event.is_set() and job_id not in cancelled:
                    cancelled.add(job_id)
                    response.cancel()
            cancelled &= {job_id for job_id, _ in calls}
            if closed:
                if not calls:
                    return
                time.sleep(WATCH_SECONDS)

    def close(self, release_memory: bool = True) -> None:
        """Cancel what waits and runs, remove the deployment."""
        with self._lock:
            jobs = [*self._waiting, *self._running]
        self._closed.set()
        for job in jobs:
            job.cancel()
        deadline = time.monotonic() + 10
        while self._calls and time.monotonic() < deadline:
            time.sleep(WATCH_SECONDS)
        self._watcher.join(timeout=2)
        self.unload()


def ray_slot_factory(cluster: RayCluster, options: RayServeOptions) -> Any:
    """An Engine `slot_factory` putting each model on its Ray Serve deployment."""

    def make(config: ModelConfig, settings: EngineSettings) -> RaySlot:
        return RaySlot(config, settings, cluster, options)

    return make
