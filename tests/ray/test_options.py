"""`serve --ray`'s options without a cluster: flags and the YAML `ray:` section become each
model's deployment, what means nothing on Ray is refused, and a missing Ray says how to get it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from localimg.backends.base import RuntimeSettings
from localimg.cli import app
from localimg.config import ModelConfig, load_config_file
from localimg.config.model import RaySection
from localimg.engine import EngineSettings
from localimg.errors import ConfigError
from localimg.ray.cluster import RayServeOptions, parse_autoscale, plan_for


def config(**ray: object) -> ModelConfig:
    return ModelConfig(name="tiny", ray=RaySection.model_validate(ray) if ray else None)


def test_autoscale_is_min_colon_max() -> None:
    assert parse_autoscale("1:4") == (1, 4)
    assert parse_autoscale("0:2") == (0, 2)
    for bad in ("4", "a:b", "3:1", "0:0", "-1:2", "1:2:3"):
        with pytest.raises(ValueError, match=r"MIN:MAX|MIN <= MAX"):
            parse_autoscale(bad)


def test_flags_make_each_models_deployment() -> None:
    settings = EngineSettings(max_queue=7)
    plan = plan_for(config(), settings, RayServeOptions(replicas=3), has_gpus=False)
    options = plan.deployment_options()
    assert options["num_replicas"] == 3 and "autoscaling_config" not in options
    assert options["max_ongoing_requests"] == 1 and options["max_queued_requests"] == 7
    assert options["ray_actor_options"] == {"num_cpus": 1, "num_gpus": 0.0}
    scaled = plan_for(config(), settings, RayServeOptions(autoscale=(0, 4)), has_gpus=True)
    options = scaled.deployment_options()
    assert "num_replicas" not in options
    assert options["autoscaling_config"]["min_replicas"] == 0
    assert options["autoscaling_config"]["max_replicas"] == 4
    assert options["ray_actor_options"]["num_gpus"] == 1.0  # the cluster has GPUs
    half = RayServeOptions(gpus_per_replica=0.5)
    assert plan_for(config(), settings, half, has_gpus=True).gpus == 0.5
    # The device in each replica: --device, else the CPU without GPUs, else the GPU Ray gives.
    assert plan.device == "cpu" and scaled.device is None
    cuda = EngineSettings(runtime=RuntimeSettings(device="cuda"))
    assert plan_for(config(), cuda, RayServeOptions(), has_gpus=False).device == "cuda"


def test_the_yaml_ray_section_wins_for_its_model() -> None:
    settings = EngineSettings(runtime=RuntimeSettings(threads=None))
    flags = RayServeOptions(replicas=3, gpus_per_replica=1)
    plan = plan_for(config(replicas=2, gpus_per_replica=0.25), settings, flags, has_gpus=True)
    assert (plan.replicas, plan.autoscale, plan.gpus) == (2, None, 0.25)
    plan = plan_for(config(min_replicas=1, max_replicas=5), settings, flags, has_gpus=True)
    assert (plan.replicas, plan.autoscale, plan.gpus) == (None, (1, 5), 1)
    # CPU threads per replica: --threads, else the YAML's threads, else 1; Ray reserves as many.
    yaml_threads = ModelConfig(name="t", threads=3)
    assert plan_for(yaml_threads, settings, flags, has_gpus=False).threads == 3
    cli_threads = EngineSettings(runtime=RuntimeSettings(threads=2))
    assert plan_for(yaml_threads, cli_threads, flags, has_gpus=False).threads == 2
    assert plan_for(config(), settings, flags, has_gpus=False).threads == 1


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("  replicas: 2\n  min_replicas: 1\n  max_replicas: 2\n", "not both"),
        ("  min_replicas: 1\n", "needs both"),
        ("  min_replicas: 3\n  max_replicas: 2\n", "more than max_replicas"),
        ("  replicas: 0\n", "replicas"),
        ("  gpus_per_replica: -1\n", "gpus_per_replica"),
        ("  replica: 2\n", "replica"),  # a misspelt key is refused, not ignored
    ],
)
def test_bad_ray_sections_are_refused(tmp_path: Path, section: str, message: str) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(f"name: tiny\nbackend: diffusers\nray:\n{section}", encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_config_file(path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--replicas", "2"], "only applies with --ray"),
        (["--ray-address", "auto"], "only applies with --ray"),
        (["--autoscale", "1:2"], "only applies with --ray"),
        (["--gpus-per-replica", "1"], "only applies with --ray"),
        (["--ray", "--in-process"], "cannot be used with --ray"),
        (["--ray", "--max-batch", "4"], "cannot be used with --ray"),
        (["--ray", "--max-memory", "8G"], "cannot be used with --ray"),
        (["--ray", "--max-loaded-models", "2"], "cannot be used with --ray"),
        (["--ray", "--replicas", "2", "--autoscale", "1:2"], "not both"),
        (["--ray", "--autoscale", "3:1"], "MIN <= MAX"),
        (["--ray", "--autoscale", "many"], "MIN:MAX"),
    ],
)
def test_serve_refuses_ray_flags_that_cannot_apply(
    models_dir: Path, args: list[str], message: str
) -> None:
    result = CliRunner().invoke(app, ["serve", *args, "--port", "1"])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


def test_serve_ray_without_ray_says_how_to_install_it(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if not installed
    monkeypatch.setitem(sys.modules, "ray.serve", None)
    result = CliRunner().invoke(app, ["serve", "--ray", "--port", "1"])
    assert result.exit_code == 4
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install 'localimg[ray]'" in lines[0]


def test_ray_is_imported_only_by_serve_ray() -> None:
    """`localimg --help`, plain `serve` and the server app never load Ray (it takes seconds)."""
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from localimg.cli import app\n"
        "import localimg.server.app, localimg.ray.app\n"
        "assert CliRunner().invoke(app, ['serve', '--help']).exit_code == 0\n"
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
