"""The app of `serve --ray`: the same Starlette app (`create_app`) over an engine of Ray slots.

Every front end (the OpenAI routes with streaming, image jobs, A1111 with interrupt, the page,
/metrics) works unchanged, because only the engine's slots differ (ray/slot.py). On top, each
response that carries a finished generation names the replica(s) that made it in
`X-Localimg-Replica` (a comma-separated list when one request ran several jobs, as A1111's
n_iter). Streams and 202 job answers start before a replica is chosen, so they carry none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from localimg.engine import Engine
from localimg.ray.cluster import RayCluster
from localimg.ray.slot import RaySlot, ray_slot_factory
from localimg.server.app import ServerSettings, create_app
from localimg.server.http.asgi import Message, Receive, Scope, Send

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from localimg.engine import EngineSettings

REPLICA_HEADER = "x-localimg-replica"


class ReplicaHeaderMiddleware:
    """Adds X-Localimg-Replica to responses of requests whose jobs a replica finished."""

    def __init__(self, app: Any, engine: Engine) -> None:
        self.app = app
        self.engine = engine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_replica(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = self.replicas(scope)
                if names:
                    headers = list(message.get("headers", []))
                    headers.append((REPLICA_HEADER.encode(), ",".join(names).encode()))
                    message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_replica)

    def replicas(self, scope: Scope) -> list[str]:
        """The replicas of the finished jobs this request ran (record_job), in order."""
        names: list[str] = []
        slots = self.engine.slots
        for job in scope.get("state", {}).get("jobs", []):
            slot = slots.get(job.model)
            if not isinstance(slot, RaySlot) or not job.future.done():
                continue
            name = slot.replica_of(job.id)
            if name is not None and name not in names:
                names.append(name)
        return names


def create_ray_app(
    settings: ServerSettings, engine_settings: EngineSettings, cluster: RayCluster
) -> Starlette:
    """The server app whose models run on `cluster` (started), one deployment per model."""
    engine = Engine(engine_settings, slot_factory=ray_slot_factory(cluster, cluster.options))
    app = create_app(settings, engine)
    app.add_middleware(ReplicaHeaderMiddleware, engine=engine)
    return app
