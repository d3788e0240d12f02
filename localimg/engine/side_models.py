"""The side models an engine holds (upscalers, control preprocessors), loaded like pipelines.

A side model is made by its registry's factory the first time a request names it, admitted by
the lifecycle before it loads (so its memory estimate can evict idle pipelines or side models,
or be refused), kept loaded for the next request, reaped after the engine's keep-alive, evicted
when something else needs the room, and unloaded when the engine closes.

Calls run on the caller's thread, one at a time per side model: an upscaler's weights are no
more thread-safe than a pipeline's, but a call is short, so it needs no queue of its own.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

from localimg.backends.base import RuntimeSettings
from localimg.backends.side import SideModel, SideRegistry
from localimg.engine import memory

# The engine's admission check (Lifecycle.admit_side): entry, kind, name, need.
BeforeLoad = Callable[["SideEntry", str, str, memory.Need], None]


class SideEntry:
    """One side model as the engine holds it: a lifecycle `Resident` (lifecycle.py)."""

    def __init__(self, model: SideModel) -> None:
        self.model = model
        self.last_used = time.monotonic()
        self.memory_need: memory.Need | None = None  # set when admitted, cleared on unload
        # Held while the model loads or answers a call: eviction only unloads an entry whose
        # lock it gets without waiting, so a model is never unloaded mid-call.
        self._lock = threading.RLock()
        self._users = 0  # callers using or waiting for the model
        self._count = threading.Lock()
        self.loads = 0

    @property
    def state(self) -> str:
        return "loaded" if self.memory_need is not None else "unloaded"

    @property
    def busy(self) -> bool:
        """A call is running or waiting: not a candidate for unloading."""
        with self._count:
            return self._users > 0

    @property
    def memory_bytes(self) -> int | None:
        """The model's memory: its estimate, as admitted."""
        need = self.memory_need
        return need.bytes if need is not None else None

    @property
    def need(self) -> memory.Need:
        """What loading it takes, as the model estimates it."""
        return memory.Need(self.model.estimated_bytes, self.model.where)

    @contextlib.contextmanager
    def use(self, before_load: BeforeLoad | None) -> Iterator[SideModel]:
        """The loaded model, for one call: loads it first (after `before_load` made room for
        it, or refused) if needed."""
        with self._count:
            self._users += 1
        try:
            with self._lock:
                if self.memory_need is None:
                    if before_load is not None:
                        before_load(self, self.model.kind, self.model.name, self.need)
                    try:
                        self.model.load()
                    except BaseException:
                        self.memory_need = None
                        raise
                    self.loads += 1
                yield self.model
                self.last_used = time.monotonic()
        finally:
            with self._count:
                self._users -= 1

    def unload(self) -> None:
        """Give the model's memory back (after the running call, if any)."""
        with self._lock:
            if self.memory_need is not None:
                self.memory_need = None
                self.model.unload()

    def unload_if_idle(self) -> bool:
        """Unload unless a call is running or waiting (never waits); whether it unloaded."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            if self.busy:
                return False
            self.unload()
            return True
        finally:
            self._lock.release()


class SideModels:
    """The engine's side models by (kind, name), made from a registry on first use."""

    def __init__(self, registry: SideRegistry, runtime: RuntimeSettings) -> None:
        self.registry = registry
        self.runtime = runtime
        self._entries: dict[tuple[str, str], SideEntry] = {}
        self._lock = threading.Lock()
        self.before_load: BeforeLoad | None = None  # the engine's admission check

    @contextlib.contextmanager
    def use(self, kind: str, name: str) -> Iterator[SideModel]:
        """A side model, loaded (made and admitted first if needed), for one call."""
        with self.entry(kind, name).use(self.before_load) as model:
            yield model

    def entry(self, kind: str, name: str) -> SideEntry:
        """The entry of a side model (made, not loaded, on first use); ModelNotFound if the
        registry has no such model."""
        with self._lock:
            name = self.registry.resolve(kind, name)
            found = self._entries.get((kind, name))
            if found is None:
                found = SideEntry(self.registry.create(kind, name, self.runtime))
                self._entries[(kind, name)] = found
            return found

    @property
    def entries(self) -> dict[tuple[str, str], SideEntry]:
        """Every side model asked for so far, loaded or not (the lifecycle reads this)."""
        with self._lock:
            return dict(self._entries)

    def forget_missing(self, kind: str) -> list[str]:
        """Unload and drop the entries of `kind` the registry no longer has (a file removed
        from its folder); their names."""
        known = set(self.registry.names(kind))
        with self._lock:
            gone = [key for key in self._entries if key[0] == kind and key[1] not in known]
            entries = [self._entries.pop(key) for key in gone]
        for entry in entries:
            entry.unload()
        return [name for _, name in gone]

    def close(self) -> None:
        """Unload every side model (after its running call)."""
        with self._lock:
            entries, self._entries = list(self._entries.values()), {}
        for entry in entries:
            entry.unload()
