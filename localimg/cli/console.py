"""Terminal output: a progress display fed by engine events, and one-line errors.

The progress display shows model loading as its own phase (a spinner) and then one bar over all
denoising steps of the request. It draws nothing when stderr is not a terminal, so pipes and CI
logs stay clean.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from localimg._util.logs import JsonFormatter
from localimg.requests import ProgressEvent

err_console = Console(stderr=True)


def setup_logging(level: str = "WARNING", log_format: str = "text") -> None:
    """Library warnings (YAML keys ignored, f16 fallback) go to stderr through rich; with
    `log_format="json"` every record is one JSON object a line instead (`serve --log-format`)."""
    handler: logging.Handler
    if log_format == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    else:
        handler = RichHandler(console=err_console, show_path=False, show_time=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    logging.getLogger("localimg").setLevel(level.upper())


def print_error(message: str) -> None:
    # Messages are plain text: escape them, or rich would eat "[ggml]" in "localimg[ggml]".
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


class GenerationProgress:
    """A context manager whose `update` method is an engine progress listener.

    Loading is its own phase: a status line, and no live display while it lasts, so the download
    bars huggingface_hub draws for a first-time hub model are not fought over. The step bar starts
    with the first denoising step and covers all images of the request.
    """

    def __init__(self, model: str, enabled: bool | None = None) -> None:
        self.model = model
        self.enabled = err_console.is_terminal if enabled is None else enabled
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err_console,
            disable=not self.enabled,
            transient=False,
        )
        self._started = False
        self._load_began: float | None = None
        self._steps: TaskID | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> GenerationProgress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._started:
            self._progress.__exit__(exc_type, exc, tb)

    def update(self, event: ProgressEvent) -> None:
        if not self.enabled:
            return
        with self._lock:
            if event.phase == "load" and self._load_began is None:
                self._load_began = time.monotonic()
                err_console.print(f"[cyan]loading[/] {self.model} ...", highlight=False)
            elif event.phase in ("step", "decode", "done"):
                if self._load_began is not None:
                    took = time.monotonic() - self._load_began
                    err_console.print(
                        f"[green]loaded[/] {self.model} in {took:.1f} s", highlight=False
                    )
                    self._load_began = None
                if not self._started:
                    self._progress.__enter__()
                    self._started = True
                if self._steps is None:
                    self._steps = self._progress.add_task("generating", total=event.total or None)
                self._progress.update(self._steps, completed=event.step, total=event.total or None)


class RichProgress:
    """One line per file (size, speed, ETA) plus a total line, on stderr."""

    def __init__(self, enabled: bool | None = None) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as RichBar

        self.enabled = err_console.is_terminal if enabled is None else enabled
        self._bar = RichBar(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=err_console,
            disable=not self.enabled,
        )
        self._lock = threading.Lock()
        self._tasks: dict[str, Any] = {}
        self._total = self._bar.add_task("total", total=0)

    def __enter__(self) -> RichProgress:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def start(self, name: str, total: int | None, done: int) -> None:
        with self._lock:
            self._tasks[name] = self._bar.add_task(name, total=total, completed=done)
            task = self._bar.tasks[self._total]
            self._bar.update(
                self._total,
                total=(task.total or 0) + (total or 0),
                completed=task.completed + done,
            )

    def advance(self, name: str, nbytes: int) -> None:
        with self._lock:
            self._bar.advance(self._tasks[name], nbytes)
            self._bar.advance(self._total, nbytes)

    def finish(self, name: str) -> None:
        with self._lock:
            task_id = self._tasks.get(name)
            if task_id is not None:
                task = self._bar.tasks[task_id]
                if task.total is None:
                    self._bar.update(task_id, total=task.completed)
