"""The `localimg` command line: parse options, call the engine, render the result. Thin.

Heavy modules (torch, diffusers, the backends) are imported inside commands, so `localimg --help`
stays fast. Each command group has its module; importing this package registers them all on
`app` (cli/app.py), whose group class maps every error to one line and an exit code.
"""

from __future__ import annotations

from localimg.cli import gallery, generate, models, serve, upscale  # noqa: F401 (they register commands)
from localimg.cli.app import app, models_app

__all__ = ["app", "main", "models_app"]


def main() -> None:
    """Console-script entry point (errors are mapped by the group in cli/app.py)."""
    app()
