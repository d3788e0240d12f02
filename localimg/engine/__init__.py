"""The engine: model slots, their queues and lifecycle, and worker processes. Other parts import
from this package, never from its modules, so its inside can be rearranged freely."""

from localimg.engine.engine import Engine
from localimg.engine.events import EngineEvents, EngineListener, JobFinished
from localimg.engine.job import (
    Job,
    ProgressListener,
    as_backend_error,
    waiting_count,
    waiting_position,
)
from localimg.engine.merge import merge_request
from localimg.engine.settings import EngineSettings
from localimg.engine.slots import InProcessSlot, Slot
from localimg.engine.worker_parent import WorkerOptions, WorkerSlot, load_now, worker_slot_factory

__all__ = [
    "Engine",
    "EngineEvents",
    "EngineListener",
    "EngineSettings",
    "InProcessSlot",
    "Job",
    "JobFinished",
    "ProgressListener",
    "Slot",
    "WorkerOptions",
    "WorkerSlot",
    "as_backend_error",
    "load_now",
    "merge_request",
    "waiting_count",
    "waiting_position",
    "worker_slot_factory",
]
