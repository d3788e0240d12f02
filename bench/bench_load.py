"""A bounded load test of `localimg serve`: many clients, a small queue, every request answered.

Run: `python bench/bench_load.py [--clients 64] [--duration 60] [--model tiny|sd15]`
(shortened: `--clients 16 --duration 20`).

A real `localimg serve --max-queue 8` (models in worker processes) is started as a subprocess.
The clients are spread over three front ends: the OpenAI generations route, the image job routes
(create, then poll or follow `/events`; some jobs are cancelled with DELETE) and the A1111
txt2img route (skipped, with a note, where the server has no `/sdapi/v1/txt2img`). Some requests
are cut off mid-way: a raw socket closed while the server works (OpenAI, A1111), or an `/events`
stream left after its first event. A client that gets 429 waits (Retry-After, at most
`--max-backoff`) and goes on.

It asserts, and exits 1 otherwise:
- every request got an answer: 200 or 202, or 429 with a Retry-After header (the cut-off ones
  aside), never a connection error, a timeout or another status;
- nothing is lost or left running: at the end every image job is finished (completed, failed or
  cancelled) and every model's queue is empty and its slot idle (`/v1/models`);
- the server process's resident memory is flat: the mean of the last third of the run is within
  `--rss-tolerance` of the first third (samples every 0.25 s, after a warm-up of each route).
Then it prints a table per route (answers, 429s, cut-offs, latency) and the memory figures.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
print = functools.partial(print, flush=True)  # progress shows as it happens

FINISHED = ("completed", "failed", "cancelled")


@dataclass
class Tally:
    """What one route's requests got back (shared by its clients, under a lock)."""

    statuses: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # of the 200/202 answers
    cut: int = 0  # requests the client cut off on purpose
    cancels: int = 0  # jobs cancelled with DELETE
    failures: list[str] = field(default_factory=list)


class Results:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.routes: dict[str, Tally] = defaultdict(Tally)
        self.job_ids: set[str] = set()

    def answer(self, route: str, response: Any, started: float) -> bool:
        """Record one answer; False (and a failure) unless 200/202 or 429 with Retry-After."""
        status = response.status_code
        elapsed = time.monotonic() - started
        with self.lock:
            tally = self.routes[route]
            if status in (200, 202):
                tally.latencies.append(elapsed)
                tally.statuses[str(status)] += 1
                return True
            if status == 429 and response.headers.get("retry-after", "").isdigit():
                tally.statuses["429"] += 1
                return True
            tally.statuses[str(status)] += 1
            tally.failures.append(f"{route}: HTTP {status} {response.text[:200]}")
            return False

    def fail(self, route: str, what: str) -> None:
        with self.lock:
            self.routes[route].failures.append(f"{route}: {what}")

    def count(self, route: str, what: str) -> None:
        with self.lock:
            tally = self.routes[route]
            if what == "cut":
                tally.cut += 1
            else:
                tally.cancels += 1


@dataclass
class Setup:
    url: str
    port: int
    body: dict[str, Any]
    a1111: bool
    deadline: float
    disconnect_every: int
    cancels: bool
    max_backoff: float
    timeout: float


def backoff(response: Any, setup: Setup) -> None:
    if response.status_code == 429:
        wait = min(float(response.headers.get("retry-after", "1")), setup.max_backoff)
        time.sleep(wait * random.uniform(0.5, 1.0))


def cut_off(setup: Setup, path: str, body: dict[str, Any]) -> None:
    """Send a POST and close the socket before the answer: a client that goes away."""
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", setup.port), timeout=10) as sock:
        sock.sendall(head + data)
        time.sleep(random.uniform(0.05, 0.6))


def openai_client(setup: Setup, results: Results, route: str, index: int) -> None:
    """POST generations (or A1111 txt2img) until the deadline; every Nth is cut off."""
    import httpx

    path = "/v1/images/generations" if route == "openai" else "/sdapi/v1/txt2img"
    with httpx.Client(base_url=setup.url, timeout=setup.timeout) as client:
        n, seed = index, 1000 * index  # the offset spreads the cut-offs over the clients
        while time.monotonic() < setup.deadline:
            n += 1
            seed += 1
            body = dict(setup.body, seed=seed)
            if route == "a1111":
                body = {
                    "prompt": body["prompt"],
                    "steps": body["steps"],
                    "width": setup.body["width"],
                    "height": setup.body["height"],
                    "seed": seed,
                }
            else:
                body = {k: v for k, v in body.items() if k not in ("width", "height")}
            if setup.disconnect_every and n % setup.disconnect_every == 0:
                try:
                    cut_off(setup, path, body)
                    results.count(route, "cut")
                except OSError as exc:
                    results.fail(route, f"cut-off request failed to send: {exc}")
                continue
            started = time.monotonic()
            try:
                response = client.post(path, json=body)
            except httpx.HTTPError as exc:
                results.fail(route, f"no answer: {type(exc).__name__}: {exc}")
                continue
            results.answer(route, response, started)
            backoff(response, setup)


JOB_CYCLE = ("follow", "cancel", "poll", "leave")


def job_client(setup: Setup, results: Results, index: int) -> None:
    """Create jobs until the deadline; each is, in turn: followed through /events to its end,
    cancelled with DELETE after its first poll, polled to its end, or left after its first
    event (it runs on without a client)."""
    import httpx

    with httpx.Client(base_url=setup.url, timeout=setup.timeout) as client:
        made, seed = index, 1000 * index  # the offset spreads the behaviours over the clients
        while time.monotonic() < setup.deadline:
            seed += 1
            body = {k: v for k, v in setup.body.items() if k not in ("width", "height")}
            started = time.monotonic()
            try:
                response = client.post("/v1/images/jobs", json=dict(body, seed=seed))
            except httpx.HTTPError as exc:
                results.fail("jobs", f"no answer to POST: {type(exc).__name__}: {exc}")
                continue
            if not results.answer("jobs", response, started) or response.status_code != 202:
                backoff(response, setup)
                continue
            job_id = response.json()["id"]
            made += 1
            with results.lock:
                results.job_ids.add(job_id)
            try:
                behaviour = JOB_CYCLE[made % len(JOB_CYCLE)]
                if behaviour == "leave" and setup.disconnect_every:
                    leave_events(client, job_id, results)
                elif behaviour == "cancel" and setup.cancels:
                    poll(client, job_id, results, setup, cancel=True)
                elif behaviour == "follow":
                    follow_events(client, job_id, results)
                else:
                    poll(client, job_id, results, setup, cancel=False)
            except httpx.HTTPError as exc:
                results.fail("jobs", f"no answer for {job_id}: {type(exc).__name__}: {exc}")


def poll(client: Any, job_id: str, results: Results, setup: Setup, cancel: bool) -> None:
    limit = time.monotonic() + setup.timeout
    while time.monotonic() < limit:
        started = time.monotonic()
        response = client.get(f"/v1/images/jobs/{job_id}")
        if not results.answer("job polls", response, started):
            return
        status = response.json()["status"]
        if status in FINISHED:
            return
        if cancel:
            started = time.monotonic()
            deleted = client.delete(f"/v1/images/jobs/{job_id}")
            if results.answer("job deletes", deleted, started):
                results.count("job deletes", "cancel")
                if deleted.json()["status"] != "cancelled":
                    results.fail("job deletes", f"{job_id} is {deleted.json()['status']}")
            return
        time.sleep(0.3)
    results.fail("job polls", f"{job_id} did not finish within {setup.timeout:g} s")


def follow_events(client: Any, job_id: str, results: Results) -> None:
    started = time.monotonic()
    last: dict[str, Any] = {}
    with client.stream("GET", f"/v1/images/jobs/{job_id}/events") as response:
        if not results.answer("job events", response, started):
            return
        for line in response.iter_lines():
            if line.startswith("data: "):
                last = json.loads(line[6:])
    if last.get("status") not in FINISHED:
        results.fail("job events", f"{job_id}: the stream ended at {last.get('status')}")


def leave_events(client: Any, job_id: str, results: Results) -> None:
    started = time.monotonic()
    with client.stream("GET", f"/v1/images/jobs/{job_id}/events") as response:
        if results.answer("job events", response, started):
            for line in response.iter_lines():
                if line.startswith("data: "):
                    break
    results.count("job events", "cut")


# -- the server ----------------------------------------------------------------------------------


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Sampler(threading.Thread):
    """The server's RSS (and its model workers', summed) every 0.25 s."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.workers: list[int] = []
        self.samples: list[float] = []
        self.worker_samples: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.25):
            value = rss_mib(self.pid)
            if value is not None:
                self.samples.append(value)
            workers = [rss_mib(pid) for pid in self.workers]
            if workers and all(w is not None for w in workers):
                self.worker_samples.append(sum(w or 0.0 for w in workers))


def thirds(samples: list[float]) -> tuple[float, float]:
    """The mean of the first and of the last third of the samples."""
    third = max(1, len(samples) // 3)
    return statistics.fmean(samples[:third]), statistics.fmean(samples[-third:])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(models: Path, work: Path, port: int, max_queue: int) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "localimg", "serve", "--models-path", str(models),
        "--host", "127.0.0.1", "--port", str(port), "--max-queue", str(max_queue),
        "--output-dir", str(work / "out"), "--log-level", "warning",
    ]  # fmt: skip
    log = (work / "server.log").open("wb")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with status {process.returncode}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not get ready within 120 s")


def settle(url: str, job_ids: set[str], limit: float) -> tuple[Counter[str], list[dict[str, Any]]]:
    """Wait (up to `limit` s) for every job to finish and every model to go idle."""
    import httpx

    deadline = time.monotonic() + limit
    while True:
        jobs = httpx.get(url + "/v1/images/jobs", timeout=30).json()["data"]
        models = httpx.get(url + "/v1/models", timeout=30).json()["data"]
        statuses = Counter(j["status"] for j in jobs if j["id"] in job_ids)
        unfinished = sum(1 for j in jobs if j["status"] not in FINISHED)
        # A cancelled job is reported at once; its engine job may still be stopping.
        busy = [m for m in models if m.get("queued") or m.get("busy")]
        if (not unfinished and not busy) or time.monotonic() > deadline:
            return statuses, busy + [j for j in jobs if j["status"] not in FINISHED]
        time.sleep(0.5)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--model", choices=["tiny", "sd15"], default="tiny")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--max-queue", type=int, default=8)
    parser.add_argument(
        "--disconnect-every", type=int, default=5, help="cut off every Nth request (0: never)"
    )
    parser.add_argument("--no-cancels", action="store_true", help="no job is DELETEd")
    parser.add_argument("--max-backoff", type=float, default=1.0, help="longest 429 wait (s)")
    parser.add_argument("--timeout", type=float, default=300.0, help="per request (s)")
    parser.add_argument("--rss-tolerance", type=float, default=0.10)
    args = parser.parse_args()

    import httpx
    from sd15 import model_folder

    from tests.support.server_support import write_model

    work = Path(tempfile.mkdtemp(prefix="bench-load-"))
    models = work / "models"
    models.mkdir()
    write_model(models, "bench", model_folder(args.model))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_server(models, work, port, args.max_queue)
    sampler = Sampler(process.pid)
    failures: list[str] = []
    try:
        wait_ready(url, process)
        body = {
            "model": "bench",
            "prompt": "a lighthouse at dusk",
            "size": f"{args.size}x{args.size}",
            "width": args.size,
            "height": args.size,
            "steps": args.steps,
        }
        warm = {k: v for k, v in body.items() if k not in ("width", "height")}
        print(f"server {url} (pid {process.pid}), log {work / 'server.log'}; warming up")
        first = httpx.post(url + "/v1/images/generations", json=warm, timeout=600)
        assert first.status_code == 200, first.text
        job = httpx.post(url + "/v1/images/jobs", json=warm, timeout=60)
        assert job.status_code == 202, job.text
        a1111_body = {
            "prompt": "warm",
            "steps": args.steps,
            "width": args.size,
            "height": args.size,
        }
        a1111 = httpx.post(url + "/sdapi/v1/txt2img", json=a1111_body, timeout=600)
        has_a1111 = a1111.status_code != 404
        if not has_a1111:
            print("note: /sdapi/v1/txt2img answers 404 here: the A1111 route is skipped")
        elif a1111.status_code != 200:
            failures.append(f"a1111 warm-up: HTTP {a1111.status_code} {a1111.text[:200]}")
        settle(url, {job.json()["id"]}, 120)

        routes = ["openai", "jobs", "a1111"] if has_a1111 else ["openai", "jobs"]
        setup = Setup(
            url=url,
            port=port,
            body=body,
            a1111=has_a1111,
            deadline=time.monotonic() + args.duration,
            disconnect_every=args.disconnect_every,
            cancels=not args.no_cancels,
            max_backoff=args.max_backoff,
            timeout=args.timeout,
        )
        listed = httpx.get(url + "/v1/models", timeout=30).json()["data"]
        sampler.workers = [m["worker"]["pid"] for m in listed if (m.get("worker") or {}).get("pid")]
        results = Results()
        threads = []
        for index in range(args.clients):
            route = routes[index % len(routes)]
            if route == "jobs":
                target: Any = functools.partial(job_client, setup, results, index)
            else:
                target = functools.partial(openai_client, setup, results, route, index)
            threads.append(threading.Thread(target=target, name=f"client-{index}", daemon=True))
        print(f"{args.clients} clients for {args.duration:g} s over {', '.join(routes)}")
        sampler.start()
        began = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=args.duration + args.timeout + 60)
            if thread.is_alive():
                failures.append(f"{thread.name} still waiting for an answer")
        sampler.stop.set()
        load_seconds = time.monotonic() - began
        statuses, leftover = settle(url, results.job_ids, 120)
        if leftover:
            failures.append(f"left running or queued after 120 s: {leftover}")
        alive = process.poll() is None
        if not alive:
            failures.append(f"the server died (status {process.returncode})")
    finally:
        sampler.stop.set()
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()

    print(f"\nload: {load_seconds:.1f} s, {args.clients} clients, queue {args.max_queue}, "
          f"model {args.model} {args.size}px {args.steps} steps\n")  # fmt: skip
    header = (
        "| route | requests | 200/202 | 429 | other | cut off | DELETEs | p50 s (200/202) | p95 s |"
    )
    print(header)
    print("|" + " --- |" * 9)
    for name, tally in sorted(results.routes.items()):
        answered = tally.statuses["200"] + tally.statuses["202"]
        other = sum(v for k, v in tally.statuses.items() if k not in ("200", "202", "429"))
        total = sum(tally.statuses.values()) + tally.cut
        print(
            f"| {name} | {total} | {answered} | {tally.statuses['429']} | {other} | {tally.cut} "
            f"| {tally.cancels} | {percentile(tally.latencies, 0.5):.2f} "
            f"| {percentile(tally.latencies, 0.95):.2f} |"
        )
        failures += tally.failures
    print(f"\nimage jobs created: {len(results.job_ids)}; final statuses: {dict(statuses)}")
    samples = sampler.samples
    head, tail = thirds(samples)
    ratio = tail / head
    print(
        f"server RSS: first third {head:.1f} MiB, last third {tail:.1f} MiB (ratio {ratio:.3f}, "
        f"max {max(samples):.1f} MiB, {len(samples)} samples)"
    )
    if sampler.worker_samples:
        w_head, w_tail = thirds(sampler.worker_samples)
        print(
            f"model worker RSS (not asserted): first third {w_head:.1f} MiB, last third "
            f"{w_tail:.1f} MiB (ratio {w_tail / w_head:.3f})"
        )
    if ratio > 1 + args.rss_tolerance:
        failures.append(
            f"server RSS grew {100 * (ratio - 1):.1f}% (> {100 * args.rss_tolerance:g}%)"
        )
    if failures:
        print(f"\nFAILED ({len(failures)}):")
        for line in failures[:40]:
            print("  " + line)
        return 1
    print("\nOK: every request answered (200/202 or 429 with Retry-After), nothing left running, "
          "memory flat")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
