"""Benchmark contenders that each run in a clean process of their own, driven one call at a time.

Why: a contender that runs inside the benchmark process shares it with the HTTP client, the
server's event loop, the other contender's thread pools and allocator, and comes out slower than
one in a fresh process (ratios below 1 that measure the yardstick, not the thing measured). Here
each contender is a fresh interpreter that loads its model, warms up once, then times one call per
`go` the parent sends, so the parent can alternate contenders (who goes first rotates every round,
with a pause before each) and a machine whose load drifts slows all of them alike.

The protocol, on the child's stdin/stdout, one line each (anything else the child prints, such as
a library's chatter, is skipped):

    child  -> READY                   loaded and warmed up (or REFUSED <json message>, then exits)
    parent -> go                      child -> TIME <seconds>
    parent -> quit <path.npy>         child saves its last image's pixels there (uint8 array:
                                      height x width x 3, or frames x height x width x 3),
                                      -> DONE <json info>, exits

A benchmark script is its own child: it starts `python this_script.py --child ...` through
`Contender` and, in that mode, calls `serve()` with a function that loads and returns the timed
call.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

SETTLE = 1.0  # seconds of pause before each timed call, so one's idle threads do not slow another


def pixels(image: Any) -> Any:
    """An image, a list of frames or an array as a uint8 numpy array (frames stacked)."""
    import numpy as np

    if isinstance(image, list | tuple):
        return np.stack([pixels(frame) for frame in image])
    if hasattr(image, "convert"):  # PIL
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    array = np.asarray(image)
    if array.dtype != np.uint8:  # floats in [0, 1], as diffusers' output_type="np" gives
        array = (array * 255).round().clip(0, 255).astype(np.uint8)
    return array


def serve(
    setup: Callable[[], Callable[[], Any]],
    info: Callable[[], dict[str, Any]] | None = None,
    refusals: tuple[type[BaseException], ...] = (),
) -> None:
    """The child's side: `setup()` loads the model, warms up and returns the call to time (which
    returns the image); an exception of `refusals` during setup is reported as REFUSED with its
    message (a method the model cannot use) instead of a crash."""
    import numpy as np

    try:
        call = setup()
    except refusals as exc:
        print("REFUSED " + json.dumps(str(exc)), flush=True)
        return
    print("READY", flush=True)
    last: Any = None
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command != "go":
            if command == "quit" and argument and last is not None:
                np.save(argument, pixels(last))
            break
        begin = time.perf_counter()
        last = call()
        print(f"TIME {time.perf_counter() - begin}", flush=True)
    print("DONE " + json.dumps(info() if info else {}), flush=True)


class Contender:
    """One child process holding one loaded model, driven one timed call at a time.

    `refused` is the child's message when it declined at setup (then it has exited, and `run`
    must not be called). The child's stderr goes to a temporary file, shown when it dies.
    """

    def __init__(self, script: Path | str, args: Sequence[str], label: str = "") -> None:
        self.label = label or " ".join(args)
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (lives with the child)
        self.process = subprocess.Popen(
            [sys.executable, str(script), "--child", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
        )
        self.times: list[float] = []
        self.refused: str | None = None
        kind, rest = self._expect("READY", "REFUSED ")
        if kind == "REFUSED ":
            self.refused = json.loads(rest)
            self.process.wait()

    def _expect(self, *prefixes: str) -> tuple[str, str]:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            for prefix in prefixes:
                if line.startswith(prefix):
                    return prefix, line[len(prefix) :].strip()
        code = self.process.wait()
        self._stderr.seek(0)
        tail = "\n".join(self._stderr.read().strip().splitlines()[-20:])
        raise SystemExit(
            f"contender {self.label!r} exited (code {code}) before {prefixes[0]}:\n{tail}"
        )

    def _send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def run(self) -> float:
        """One timed call in the child; its seconds (also kept in `times`)."""
        self._send("go")
        seconds = float(self._expect("TIME ")[1])
        self.times.append(seconds)
        return seconds

    def median(self) -> float:
        return statistics.median(self.times)

    def finish(self) -> tuple[dict[str, Any], Any]:
        """Stop the child: its info and its last image's pixels (a uint8 array; None when it
        refused or never generated)."""
        if self.refused is not None:
            return {}, None
        import numpy as np

        with tempfile.TemporaryDirectory(prefix="contender-") as tmp:
            path = Path(tmp) / "last.npy"
            self._send(f"quit {path}")
            out = json.loads(self._expect("DONE ")[1])
            self.process.wait()
            self._stderr.close()
            return out, (np.load(path) if path.exists() else None)

    def close(self) -> None:
        """Kill the child if it is still running (on an error path)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def alternate(runs: int, calls: Sequence[Callable[[], float]], settle: float = SETTLE) -> None:
    """Call each of `calls` `runs` times, rotating who goes first every round, with a pause
    before each (a Contender's `run`, or any in-process timed call)."""
    for index in range(runs):
        shift = index % len(calls)
        for call in [*calls[shift:], *calls[:shift]]:
            time.sleep(settle)
            call()


def psnr_and_max_diff(reference: Any, other: Any) -> tuple[float, int]:
    """PSNR in dB (inf for the same pixels) and the largest per-channel difference (0-255) of two
    uint8 arrays of one shape; (nan, -1) when the shapes differ (not the same generation)."""
    import math

    import numpy as np

    if reference.shape != other.shape:
        return math.nan, -1
    diff = reference.astype(np.float64) - other.astype(np.float64)
    mse = float(np.mean(diff * diff))
    psnr = math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)
    return psnr, int(np.abs(diff).max())


def describe_difference(reference: Any, other: Any) -> str:
    """'same pixels' or how far apart two images are, for a benchmark's line."""
    psnr, biggest = psnr_and_max_diff(pixels(reference), pixels(other))
    if biggest < 0:
        return "images differ in shape"
    return "same pixels" if biggest == 0 else f"pixels differ, max {biggest}/255, {psnr:.1f} dB"
