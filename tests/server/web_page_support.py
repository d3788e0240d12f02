"""Helpers for the web page's browser tests: Debian's chromium under Playwright, a page server.

The browser is the system's chromium (no browser download). When it or Playwright is missing
the tests fail, as CI installs both; LOCALIMG_SKIP_BROWSER=1 opts out (they skip instead).
"""

from __future__ import annotations

import base64
import io
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.support.served import Served, ServeSpec, serve

CHROMIUM = os.environ.get("LOCALIMG_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SKIP_ENV = "LOCALIMG_SKIP_BROWSER"


def browser_missing(reason: str) -> None:
    """Skip when opted out (LOCALIMG_SKIP_BROWSER=1), fail otherwise."""
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{reason} ({SKIP_ENV}=1)")
    pytest.fail(f"{reason}; install it (or set {SKIP_ENV}=1 to skip the browser tests)")


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless chromium Browser (Playwright's sync API) for a test module."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        browser_missing("playwright is not installed (pip install playwright)")
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        browser_missing(f"chromium is not installed at {CHROMIUM}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def page_server(
    root: Path, models: Path, api_keys: tuple[str, ...] = (), ui: bool = True
) -> Iterator[Served]:
    """A real uvicorn server with the page (in-process model slots: quick to start)."""
    spec = ServeSpec(
        models=models,
        engine={"max_queue": 4},
        server={"api_keys": api_keys, "ui": ui, "url_ttl": 600},
    )
    with serve(spec, root) as served:
        yield served


def data_url_image(src: str) -> Image.Image:
    """The image of a `data:image/...;base64,...` URL."""
    header, _, payload = src.partition(",")
    assert header.startswith("data:image/") and header.endswith(";base64"), header[:40]
    image = Image.open(io.BytesIO(base64.b64decode(payload)))
    image.load()
    return image


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def watch_requests(page: Any, origin: str) -> list[str]:
    """Every URL the page asks for that is not on the server's own origin (nor data:/blob:)."""
    foreign: list[str] = []

    def seen(request: Any) -> None:
        url = str(request.url)
        if not url.startswith((origin + "/", "data:", "blob:")):
            foreign.append(url)

    page.on("request", seen)
    return foreign
