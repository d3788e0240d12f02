"""The ggml backend through the front ends: `localimg generate` and a real `localimg serve`.

The server runs each model in a worker process, because stable-diffusion.cpp can crash natively:
a crash there must cost one request, not the server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip("stable_diffusion_cpp")

from localimg.cli import app
from localimg.engine import Engine, EngineSettings, WorkerOptions, WorkerSlot, worker_slot_factory
from localimg.server.app import ServerSettings, create_app
from tests.support.server_support import (
    assert_openai_error,
    b64_image,
    serve_in_thread,
    wait_until,
)

pytestmark = pytest.mark.ggml


def test_cli_generate_with_the_seed_yaml(ggml_models_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "fox.png"
    runner = CliRunner()
    args = ["generate", "a fox", "-m", "stablediffusion", "--models-path", str(ggml_models_dir)]
    result = runner.invoke(app, [*args, "--seed", "5", "-n", "2", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert [img["seed"] for img in payload["images"]] == [5, 6]
    assert payload["scheduler"] == "Euler" and payload["steps"] == 2
    first = Image.open(tmp_path / "fox-1.png")
    assert first.mode == "RGB" and first.size == (64, 64)
    params = first.text["parameters"]  # type: ignore[attr-defined]
    assert (
        "Sampler: Euler," in params and "Seed: 5," in params and "Model: stablediffusion" in params
    )
    again = runner.invoke(app, [*args, "--seed", "6", "-o", str(tmp_path / "again.png")])
    assert again.exit_code == 0, again.output
    assert np.array_equal(
        np.asarray(Image.open(tmp_path / "fox-2.png")),
        np.asarray(Image.open(tmp_path / "again.png")),
    )


def test_cli_bad_sampler_and_size_are_one_line_errors(
    ggml_models_dir: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    args = ["generate", "fox", "-m", "stablediffusion", "--models-path", str(ggml_models_dir)]
    bad = runner.invoke(app, [*args, "--scheduler", "unipc", "-o", str(tmp_path / "x.png")])
    assert bad.exit_code == 2 and "no equivalent in stable-diffusion.cpp" in bad.output
    assert "Traceback" not in bad.output
    size = runner.invoke(app, [*args, "--size", "100x64", "-o", str(tmp_path / "y.png")])
    assert size.exit_code == 2 and "multiples of 64" in size.output


def test_cli_subprocess_json_is_clean_on_stdout(ggml_models_dir: Path, tmp_path: Path) -> None:
    """The library's logs go to Python logging; stdout holds only localimg's JSON."""
    out = tmp_path / "clean.png"
    proc = subprocess.run(
        [sys.executable, "-m", "localimg", "generate", "fox", "-m", "stablediffusion",
         "--models-path", str(ggml_models_dir), "--seed", "1", "-o", str(out), "--json"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["images"][0]["path"] == str(out)
    assert proc.stdout.startswith("{"), repr(proc.stdout[:40])  # not even the C library's newline
    assert "generate_image completed" not in proc.stdout + proc.stderr  # library chatter: debug


@dataclass
class Served:
    url: str
    engine: Engine

    @property
    def slot(self) -> WorkerSlot:
        slot = self.engine.slots["stablediffusion"]
        assert isinstance(slot, WorkerSlot)
        return slot


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, ggml_models_dir: Path) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("ggml-serve")
    engine = Engine(
        EngineSettings(models_path=ggml_models_dir, max_queue=8),
        slot_factory=worker_slot_factory(WorkerOptions(cancel_grace=20)),
    )
    with serve_in_thread(create_app(ServerSettings(output_dir=root / "out"), engine)) as url:
        yield Served(url, engine)


def post(served: Served, body: dict) -> httpx.Response:
    return httpx.post(f"{served.url}/v1/images/generations", json=body, timeout=300)


def test_server_generates_with_the_openai_client(served: Served) -> None:
    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key="none", max_retries=0)
    result = client.images.generate(
        model="stablediffusion", prompt="a fox", size="64x64", response_format="b64_json"
    )
    assert result.data is not None and result.data[0].b64_json
    image = b64_image(result.data[0].b64_json)
    assert image.size == (64, 64) and image.mode == "RGB"

    def pixels(seed: int, scheduler: str) -> np.ndarray:
        body = {"model": "stablediffusion", "prompt": "fox", "size": "64x64", "seed": seed,
                "scheduler": scheduler}  # fmt: skip
        response = post(served, body)
        assert response.status_code == 200, response.text
        return np.asarray(b64_image(response.json()["data"][0]["b64_json"]))

    assert np.array_equal(pixels(3, "k_dpmpp_2m"), pixels(3, "k_dpmpp_2m"))
    assert not np.array_equal(pixels(3, "euler"), pixels(3, "euler_a"))


def test_server_refuses_what_ggml_cannot_do(served: Served) -> None:
    bad = post(served, {"model": "stablediffusion", "prompt": "fox", "scheduler": "lms"})
    assert "no equivalent" in assert_openai_error(bad, 400)["message"]
    lora = post(served, {"model": "stablediffusion", "prompt": "fox <lora:nope:1>"})
    assert "LoRA 'nope' not found" in assert_openai_error(lora, 400)["message"]


def _step(served: Served) -> int:
    job = served.slot.running
    event = job.last_event if job is not None else None
    return event.step if event is not None and event.phase == "step" else 0


def test_native_crash_costs_one_request_not_the_server(served: Served) -> None:
    assert post(served, {"model": "stablediffusion", "prompt": "fox"}).status_code == 200
    responses: list[httpx.Response] = []
    body = {"model": "stablediffusion", "prompt": "fox", "size": "64x64", "steps": 300}
    thread = threading.Thread(target=lambda: responses.append(post(served, body)))
    thread.start()
    wait_until(lambda: _step(served) >= 1, what="the long ggml job to be running")
    pid = served.slot.pid
    assert pid is not None
    os.kill(pid, signal.SIGSEGV)  # what a native crash in stable-diffusion.cpp looks like
    thread.join()
    error = assert_openai_error(responses[0], 500)
    assert error["code"] == "worker_crashed"
    after = post(served, {"model": "stablediffusion", "prompt": "fox", "seed": 2})
    assert after.status_code == 200, after.text
    assert served.slot.pid not in (None, pid)
