"""When models are loaded and unloaded: keep-alive, LRU eviction and the memory budget.

Modelled on ollama's scheduler: every slot reports whether it is loaded, busy and when it was last
used; a reaper thread unloads models idle past their keep-alive; and before a model loads,
`admit` makes room for it by evicting the least recently used *idle* models until both the
loaded-model count and the memory budget allow it. A busy model is never evicted: if room cannot
be made, the request fails at once with a clear error (`InsufficientMemory`, 507, when the model
can never fit; `ModelLoading`, 503 with Retry-After, when busy models are in the way) instead of
the kernel's OOM killer ending the process.

Admission is serialized by one lock, and a model counts against the budget from the moment it
is admitted (its estimate), so two models loading at once cannot both take the last free memory.

Side models (upscalers, control preprocessors: engine/side_models.py) are residents too: they
count against the memory budget, are evicted least recently used first to make room (and make
room themselves), and follow the engine's keep-alive; they do not count as loaded models for
`--max-loaded-models`, which limits pipelines.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from localimg._util.units import format_bytes, format_duration, parse_duration
from localimg.engine import memory
from localimg.errors import InsufficientMemory, ModelLoading

if TYPE_CHECKING:
    from localimg.backends.base import RuntimeSettings
    from localimg.config import ModelConfig

log = logging.getLogger(__name__)

REAP_INTERVAL = 0.25  # seconds between keep-alive checks (a handful of attribute reads)


@dataclass(frozen=True)
class Budget:
    """Memory limits; None: no limit of that kind (the machine's free RAM is still checked)."""

    ram: int | None = None
    vram: int | None = None

    def limit(self, where: str) -> int | None:
        return self.ram if where == "ram" else self.vram

    def describe(self) -> str:
        parts = [f"{k}={format_bytes(v)}" for k, v in (("ram", self.ram), ("vram", self.vram))]
        return ", ".join(p for p in parts if not p.endswith("?")) or "none"


def parse_budget(text: str) -> Budget:
    """`12G` (RAM), or `ram=12G,vram=8G` (either part may be left out)."""
    from localimg._util.units import parse_bytes

    value = text.strip()
    if "=" not in value:
        return Budget(ram=parse_bytes(value))
    found: dict[str, int] = {}
    for part in value.split(","):
        key, _, size = part.partition("=")
        key = key.strip().lower()
        if key not in ("ram", "vram"):
            raise ValueError(f"{part!r}: use ram=SIZE and/or vram=SIZE, e.g. ram=12G,vram=8G")
        found[key] = parse_bytes(size)
    return Budget(ram=found.get("ram"), vram=found.get("vram"))


class Resident(Protocol):
    """What the lifecycle needs from anything that holds memory: a model's slot, a side model."""

    last_used: float
    memory_need: memory.Need | None  # set by admit, cleared on unload

    @property
    def busy(self) -> bool: ...

    @property
    def memory_bytes(self) -> int | None: ...

    def unload_if_idle(self) -> bool: ...


class ManagedSlot(Resident, Protocol):
    """What the lifecycle needs from a slot (engine.InProcessSlot and workers.WorkerSlot)."""

    config: ModelConfig

    @property
    def state(self) -> str: ...


class Held(NamedTuple):
    """A resident holding memory now, and what it is called in messages."""

    what: str  # "model", or a side model's kind ("upscaler")
    name: str
    resident: Resident

    @property
    def title(self) -> str:
        """How the log names it: "model a", "upscaler lanczos"."""
        return f"{self.what} {self.name}"

    @property
    def listed(self) -> str:
        """How it is named in a list of models ("a", "upscaler lanczos")."""
        return self.name if self.what == "model" else self.title


def keep_alive_for(config: ModelConfig, default: float | None) -> float | None:
    """The model's own `keep_alive:` if its YAML sets one, else the server's default."""
    value = getattr(config, "keep_alive", None)
    if value is None:
        return default
    return parse_duration(value)


class Lifecycle:
    """Keep-alive reaping and admission control over an engine's slots."""

    def __init__(
        self,
        slots: Callable[[], dict[str, Any]],
        *,
        keep_alive: float | None,
        max_loaded: int | None,
        budget: Budget,
        runtime: RuntimeSettings,
        available_ram: Callable[[], int | None] | None = None,
        side: Callable[[], dict[tuple[str, str], Any]] | None = None,
    ) -> None:
        self._slots = slots
        # The side models the engine holds, by (kind, name) (side_models.py).
        self._side = side or dict
        self.keep_alive = keep_alive
        self.max_loaded = max_loaded
        self.budget = budget
        self.runtime = runtime
        # Looked up at each check (not bound here), so the machine's free RAM is read then.
        self._available_ram = available_ram or (lambda: memory.available_ram())
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.evictions = 0

    # -- keep-alive ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._reap_loop, name="localimg-keep-alive", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _reap_loop(self) -> None:
        while not self._stop.wait(REAP_INTERVAL):
            try:
                self.reap()
            except Exception:  # the reaper must outlive any one slot's trouble
                log.exception("keep-alive check failed")

    def reap(self, now: float | None = None) -> list[str]:
        """Unload every loaded, idle model whose keep-alive has passed; their names."""
        now = time.monotonic() if now is None else now
        unloaded = []
        for name, slot in self._slots().items():
            if slot.memory_need is None and slot.state not in ("loaded", "loading"):
                continue
            keep = keep_alive_for(slot.config, self.keep_alive)
            if keep is None or slot.busy or now - slot.last_used < keep:
                continue
            if slot.unload_if_idle():
                log.info("model %s: idle for %s; unloaded", name, format_duration(keep))
                unloaded.append(name)
        return unloaded + self._reap_side(now)

    def _reap_side(self, now: float) -> list[str]:
        """Unload the idle side models past the engine's keep-alive; their titles."""
        keep = self.keep_alive
        unloaded = []
        for (kind, name), resident in self._side().items():
            if resident.memory_need is None or keep is None:
                continue
            if resident.busy or now - resident.last_used < keep:
                continue
            if resident.unload_if_idle():
                log.info("%s %s: idle for %s; unloaded", kind, name, format_duration(keep))
                unloaded.append(f"{kind} {name}")
        return unloaded

    # -- admission -----------------------------------------------------------------------------

    def admit(self, slot: ManagedSlot) -> None:
        """Make room for `slot`'s model before it loads, or raise; called by the slot itself."""
        need = memory.estimate(slot.config, self.runtime)
        with self._lock:
            self._count_room(slot)
            self._make_room(slot, Held("model", slot.config.name, slot), need)
            slot.memory_need = need or memory.Need(0, memory.device_kind(slot.config, self.runtime))
            slot.last_used = time.monotonic()

    def admit_more(self, slot: ManagedSlot, extra: memory.Need) -> None:
        """Make room for memory a loaded model takes beyond its admission (a ControlNet a
        request brings), or raise; the model's need grows by it until it unloads."""
        with self._lock:
            current = slot.memory_need
            if current is None or extra.bytes <= 0:
                return
            total = memory.Need(current.bytes + extra.bytes, current.where)
            self._make_room(slot, Held("model", slot.config.name, slot), total)
            slot.memory_need = total
            slot.last_used = time.monotonic()

    def admit_side(self, resident: Resident, kind: str, name: str, need: memory.Need) -> None:
        """Make room for a side model before it loads, or raise (side_models.py calls it)."""
        with self._lock:
            self._make_room(resident, Held(kind, name, resident), need)
            resident.memory_need = need
            resident.last_used = time.monotonic()

    def _models(self, slot: Resident) -> list[Held]:
        """The other models holding memory now."""
        return [
            Held("model", name, other)
            for name, other in self._slots().items()
            if other is not slot and other.memory_need is not None
        ]

    def _held(self, resident: Resident) -> list[Held]:
        """Everything else holding memory now: models, then side models."""
        side = [
            Held(kind, name, other)
            for (kind, name), other in self._side().items()
            if other is not resident and other.memory_need is not None
        ]
        return self._models(resident) + side

    def _evict_one(self, admitting: Held, candidates: list[Held], where: str | None) -> bool:
        """Unload the least recently used idle one of `candidates` (on `where`, if given);
        False if none."""
        idle = [
            held
            for held in candidates
            if not held.resident.busy
            and (
                where is None
                or (held.resident.memory_need and held.resident.memory_need.where == where)
            )
        ]
        for held in sorted(idle, key=lambda h: h.resident.last_used):
            if held.resident.unload_if_idle():
                self.evictions += 1
                log.info("%s unloaded for %s", held.title, admitting.name)
                return True
        return False

    def _used(self, resident: Resident, where: str) -> int:
        total = 0
        for held in self._held(resident):
            other = held.resident
            if other.memory_need is not None and other.memory_need.where == where:
                measured = other.memory_bytes if where == "ram" else None
                total += max(measured or 0, other.memory_need.bytes)
        return total

    def _count_room(self, slot: ManagedSlot) -> None:
        """Evict idle models until one more may load under --max-loaded-models, or raise."""
        name = slot.config.name
        if self.max_loaded is not None:
            while len(self._models(slot)) >= self.max_loaded:
                if not self._evict_one(Held("model", name, slot), self._models(slot), None):
                    raise ModelLoading(
                        f"cannot load model {name!r}: {self.max_loaded} models are loaded "
                        "(--max-loaded-models) and all of them are busy; try again shortly",
                        param="model",
                        code="models_busy",
                        headers={"Retry-After": "10"},
                    )

    def _make_room(self, resident: Resident, admitting: Held, need: memory.Need | None) -> None:
        """Evict idle residents until `need` fits the budget and the machine, or raise."""
        if need is None:
            return
        what = f"{admitting.what} {admitting.name!r}"
        limit = self.budget.limit(need.where)
        label = "RAM" if need.where == "ram" else "VRAM"
        if limit is not None and need.bytes > limit:
            raise InsufficientMemory(
                f"{what} needs about {format_bytes(need.bytes)} of {label}, more than "
                f"the whole budget of {format_bytes(limit)} (--max-memory); raise the budget, "
                "or use a smaller or half-precision model",
                param=admitting.what,
            )
        while True:
            free = self._free(resident, need.where, limit)
            if free is None or need.bytes <= free:
                return
            if not self._evict_one(admitting, self._held(resident), need.where):
                break
        busy = [
            held.listed
            for held in self._held(resident)
            if held.resident.memory_need is not None
            and held.resident.memory_need.where == need.where
        ]
        if busy:
            raise ModelLoading(
                f"cannot load {what} now: it needs about {format_bytes(need.bytes)} of "
                f"{label} and only {format_bytes(free)} is free while busy models "
                f"({', '.join(busy)}) hold the rest; try again shortly",
                param=admitting.what,
                code="insufficient_memory",
                headers={"Retry-After": "30"},
            )
        where = "the --max-memory budget" if limit is not None else "this machine"
        raise InsufficientMemory(
            f"{what} needs about {format_bytes(need.bytes)} of {label} but only "
            f"{format_bytes(free)} is free on {where}; free some memory, raise --max-memory, "
            "or use a smaller or half-precision model",
            param=admitting.what,
        )

    def _free(self, resident: Resident, where: str, limit: int | None) -> int | None:
        """Memory the model may still take: the budget's rest, and the machine's free RAM."""
        candidates = []
        if limit is not None:
            candidates.append(limit - self._used(resident, where))
        if where == "ram":
            available = self._available_ram()
            if available is not None:
                candidates.append(available)
        return min(candidates) if candidates else None
