"""Terminal output: a progress display fed by engine events, and one-line errors.

The progress display shows model loading as its own phase (a spinner) and then one bar over all
denoising steps of the request. It draws nothing when stderr is not a terminal, so pipes and CI
logs stay clean.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from rich.console import Console
from rich.logging import RichHandler
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

from localimg.requests import ProgressEvent

err_console = Console(stderr=True)


def setup_logging(level: str = "WARNING") -> None:
    """Library warnings (YAML keys ignored, f16 fallback) go to stderr through rich."""
    logging.basicConfig(
        level=logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, show_time=False)],
        force=True,
    )
    logging.getLogger("localimg").setLevel(level.upper())


def print_error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)


class GenerationProgress:
    """A context manager whose `update` method is an engine progress listener."""

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
        self._load: TaskID | None = None
        self._steps: TaskID | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> GenerationProgress:
        self._progress.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.__exit__(exc_type, exc, tb)

    def update(self, event: ProgressEvent) -> None:
        with self._lock:
            if event.phase == "load" and self._load is None:
                self._load = self._progress.add_task(f"loading {self.model}", total=None)
            elif event.phase in ("step", "decode", "done"):
                self._finish_load()
                if self._steps is None:
                    self._steps = self._progress.add_task("generating", total=event.total or None)
                self._progress.update(self._steps, completed=event.step, total=event.total or None)

    def _finish_load(self) -> None:
        if self._load is not None:
            self._progress.update(
                self._load, total=1, completed=1, description=f"loaded {self.model}"
            )
            self._load = None
