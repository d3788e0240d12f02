"""`serve --ray`: joining (or starting) a Ray cluster and deploying one Serve application per model.

Ray is imported here only, and only when `serve --ray` runs: `localimg serve` without it and
`localimg --help` never load it. Without `ray[serve]` installed, `import_ray` raises
`BackendNotInstalled` naming the extra to install.

Each model becomes its own Serve application (`localimg-<model>`), with one deployment whose
replicas each hold the model (ray/replica.py). No Ray HTTP proxy is started: the HTTP API is
served by `localimg serve` itself (the one ingress, which keeps the image jobs, A1111's
progress and the url-format files), and it calls the replicas through deployment handles
(ray/slot.py). How a model is deployed (`DeploymentPlan`) comes from the server's flags, with the
model YAML's `ray:` section winning for that model, as a YAML's `keep_alive:` does.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from localimg.errors import BackendError, BackendNotInstalled

if TYPE_CHECKING:
    from localimg.config import ModelConfig
    from localimg.engine import EngineSettings

log = logging.getLogger("localimg.server")

INSTALL_HINT = "pip install 'localimg[ray]'"
APP_PREFIX = "localimg-"


def import_ray() -> Any:
    """The `ray` module with Serve, or a one-line error saying how to install it."""
    try:
        import ray
        import ray.serve  # Serve is an extra of ray: ray alone is not enough
    except ImportError as exc:
        raise BackendNotInstalled(
            f"serve --ray needs Ray Serve, which is not installed ({exc.name or 'ray'} is "
            f"missing): {INSTALL_HINT}",
            code="ray_not_installed",
        ) from None
    return ray


def parse_autoscale(text: str) -> tuple[int, int]:
    """`MIN:MAX` (`--autoscale 1:4`) → (1, 4); ValueError naming what is allowed."""
    low, sep, high = text.partition(":")
    try:
        bounds = (int(low), int(high)) if sep else None
    except ValueError:
        bounds = None
    if bounds is None:
        raise ValueError(f"{text!r}: give MIN:MAX replicas, e.g. 1:4")
    if bounds[0] < 0 or bounds[1] < 1 or bounds[0] > bounds[1]:
        raise ValueError(f"{text!r}: need 0 <= MIN <= MAX and MAX >= 1, e.g. 1:4")
    return bounds


@dataclass(frozen=True)
class RayServeOptions:
    """What `serve --ray` was started with; each model's YAML `ray:` section wins over these."""

    address: str | None = None  # None: start a local Ray instance, stopped when serve stops
    replicas: int = 1
    autoscale: tuple[int, int] | None = None  # (min, max) replicas; None: a fixed count
    gpus_per_replica: float | None = None  # None: 1 where the cluster has GPUs, else 0
    num_cpus: int | None = None  # a local instance's CPUs (None: all of the machine's)


@dataclass(frozen=True)
class DeploymentPlan:
    """How one model is deployed: replicas (fixed or autoscaled), CPUs and GPUs per replica."""

    replicas: int | None
    autoscale: tuple[int, int] | None
    gpus: float
    threads: int  # torch / sd.cpp threads in each replica, and the CPUs Ray reserves for it
    max_queued: int  # requests waiting for a free replica before Ray refuses more
    # --device, else "cpu" for a replica without GPUs (Ray leaves CUDA_VISIBLE_DEVICES alone
    # then, so auto would take a GPU Ray did not give it), else None: the GPU(s) Ray gave it.
    device: str | None = None

    def deployment_options(self) -> dict[str, Any]:
        """Keyword arguments of `serve.deployment` for this plan."""
        options: dict[str, Any] = {
            "max_ongoing_requests": 1,  # a pipeline runs one generation at a time
            "max_queued_requests": self.max_queued,
            "ray_actor_options": {"num_cpus": self.threads, "num_gpus": self.gpus},
            "graceful_shutdown_timeout_s": 5,
            # localimg's own access log names each request once; Ray's would repeat it.
            "logging_config": {"enable_access_log": False},
        }
        if self.autoscale is not None:
            options["autoscaling_config"] = {
                "min_replicas": self.autoscale[0],
                "max_replicas": self.autoscale[1],
                "initial_replicas": max(1, self.autoscale[0]),
                "target_ongoing_requests": 1,
            }
        else:
            options["num_replicas"] = self.replicas
        return options

    def describe(self) -> str:
        scale = (
            f"{self.autoscale[0]}-{self.autoscale[1]} replicas (autoscaled)"
            if self.autoscale is not None
            else f"{self.replicas} replica{'s' if self.replicas != 1 else ''}"
        )
        return f"{scale}, {self.threads} CPU thread(s) and {self.gpus:g} GPU per replica"


def plan_for(
    config: ModelConfig, settings: EngineSettings, options: RayServeOptions, has_gpus: bool
) -> DeploymentPlan:
    """The model's deployment: its YAML `ray:` keys, else the server's flags."""
    section = config.ray
    replicas: int | None = options.replicas
    autoscale = options.autoscale
    gpus = options.gpus_per_replica
    if section is not None:
        if section.replicas is not None:
            replicas, autoscale = section.replicas, None
        elif section.min_replicas is not None and section.max_replicas is not None:
            replicas, autoscale = None, (section.min_replicas, section.max_replicas)
        if section.gpus_per_replica is not None:
            gpus = section.gpus_per_replica
    if autoscale is not None:
        replicas = None
    if gpus is None:
        gpus = 1.0 if has_gpus else 0.0
    threads = settings.runtime.threads or config.threads or 1
    device = settings.runtime.device or ("cpu" if gpus == 0 else None)
    return DeploymentPlan(
        replicas=replicas,
        autoscale=autoscale,
        gpus=gpus,
        threads=threads,
        max_queued=settings.max_queue,
        device=device,
    )


class RayCluster:
    """The Ray instance `serve --ray` uses: started here (and stopped at the end), or joined."""

    def __init__(self, options: RayServeOptions) -> None:
        self.options = options
        self._ray: Any = None
        self._apps: set[str] = set()
        self._lock = threading.Lock()

    def start(self) -> RayCluster:
        ray = import_ray()
        from ray import serve

        init: dict[str, Any] = {"include_dashboard": False, "namespace": "localimg"}
        if self.options.address is not None:
            init["address"] = self.options.address
        elif self.options.num_cpus is not None:
            init["num_cpus"] = self.options.num_cpus
        try:
            ray.init(**init)
        except (ConnectionError, RuntimeError) as exc:
            if self.options.address is None:
                raise
            raise BackendError(
                f"cannot join the Ray cluster at {self.options.address}: "
                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}. Is `ray start` "
                "running there? A cluster with token authentication (Ray's default) also needs "
                "RAY_AUTH_MODE=token here, and its token in RAY_AUTH_TOKEN or ~/.ray/auth_token",
                code="ray_unreachable",
            ) from None
        # No Ray HTTP proxy: localimg serves the HTTP API and calls replicas through handles.
        serve.start(proxy_location="Disabled")
        self._ray = ray
        where = self.options.address or "a local Ray instance"
        log.info("Ray Serve ready on %s (%s)", where, self.resources())
        return self

    def resources(self) -> str:
        total = self._ray.cluster_resources() if self._ray is not None else {}
        return f"{total.get('CPU', 0):g} CPUs, {total.get('GPU', 0):g} GPUs"

    @property
    def has_gpus(self) -> bool:
        return bool(self._ray is not None and self._ray.cluster_resources().get("GPU", 0) > 0)

    def deploy(self, config: ModelConfig, settings: EngineSettings, plan: DeploymentPlan) -> Any:
        """Deploy (or update) the model's application; blocks until its replicas are ready
        (each has loaded the model). Its deployment handle."""
        from ray import serve

        from localimg.ray.replica import ModelReplica

        name = app_name(config.name)
        deployment: Any = serve.deployment(name="model", **plan.deployment_options())(ModelReplica)
        with self._lock:
            self._apps.add(name)
        log.info("model %s: deploying on Ray Serve (%s)", config.name, plan.describe())
        return serve.run(deployment.bind(config, settings), name=name, route_prefix=None)

    def delete(self, model: str) -> None:
        """Remove the model's application and its replicas (their memory goes with them)."""
        from ray import serve

        name = app_name(model)
        with self._lock:
            if name not in self._apps or self._ray is None:  # never deployed, or Ray stopped
                return
            self._apps.discard(name)
        try:
            serve.delete(name)
        except Exception as exc:  # the cluster may be gone already at shutdown
            log.warning("model %s: removing its Ray Serve application failed: %s", model, exc)

    def stop(self) -> None:
        """Remove what this server deployed; stop the Ray instance if this server started it."""
        ray = self._ray
        if ray is None:
            return
        from ray import serve

        for name in sorted(self._apps):
            self.delete(name.removeprefix(APP_PREFIX))
        try:
            if self.options.address is None:
                serve.shutdown()
        finally:
            ray.shutdown()
            self._ray = None
        log.info("Ray stopped" if self.options.address is None else "left the Ray cluster")


def app_name(model: str) -> str:
    """The Serve application of a model."""
    return APP_PREFIX + model
