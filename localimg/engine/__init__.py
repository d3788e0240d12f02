"""The engine: model slots, their queues and lifecycle, and worker processes. Other parts import
from this package, never from its modules, so its inside can be rearranged freely."""

from localimg.engine.engine import (
    Engine,
    EngineSettings,
    InProcessSlot,
    Job,
    Slot,
    as_backend_error,
    merge_request,
)
from localimg.engine.worker_parent import WorkerOptions, WorkerSlot, load_now, worker_slot_factory

__all__ = [
    "Engine",
    "EngineSettings",
    "InProcessSlot",
    "Job",
    "Slot",
    "WorkerOptions",
    "WorkerSlot",
    "as_backend_error",
    "load_now",
    "merge_request",
    "worker_slot_factory",
]
