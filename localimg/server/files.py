"""The url-format images: served from the output folder under /generated, deleted after the TTL.

Their names are random tokens, so they cannot be guessed or escape the folder; they stay open
without an API key because browsers load them from `<img src>`.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from localimg.server.errors import NotFound

FILES_PATH = "/generated"


async def generated_file(request: Request) -> Response:
    """A url-format image; names are random tokens, so they cannot be guessed or escape."""
    name = request.path_params["name"]
    folder: Path = request.app.state.output_dir
    path = folder / name
    if "/" in name or name.startswith(".") or not path.is_file():
        raise NotFound("no such image (it may have expired)")
    return FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})


async def cleanup_loop(folder: Path, ttl: float) -> None:
    """Delete url-format images older than the TTL, checking every so often."""
    interval = max(1.0, min(60.0, ttl / 4))
    while True:
        await asyncio.sleep(interval)
        await asyncio.to_thread(remove_expired, folder, ttl)


def remove_expired(folder: Path, ttl: float) -> int:
    cutoff = time.time() - ttl
    removed = 0
    for path in folder.iterdir():
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except OSError:
            continue
    return removed


def routes() -> list[Route]:
    return [Route(FILES_PATH + "/{name}", generated_file, methods=["GET"])]
