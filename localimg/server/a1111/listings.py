"""A1111's LoRA and embedding lists, from the models directory's `loras/` and `embeddings/`.

`GET /sdapi/v1/loras` lists each LoRA file as A1111 does (name = file stem, alias, absolute path,
safetensors metadata). `GET /sdapi/v1/embeddings` sorts every embedding file into `loaded`
(its width fits the current model's text encoders: the A1111 routes' `sd_model_checkpoint`,
loaded yet or not) or `skipped`. Both read the folders on every request, so the refresh routes
only rescan (A1111 answers them with null).
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from localimg.errors import LocalimgError
from localimg.prompts.embeddings import list_embeddings, split_fitting
from localimg.prompts.lora_files import lora_items
from localimg.prompts.text_width import text_widths
from localimg.server.a1111.options import current_config
from localimg.server.a1111.state import A1111State


def _embeddings(state: Any, a1: A1111State) -> dict[str, Any]:
    try:
        widths = text_widths(current_config(state, a1))
    except LocalimgError:  # no model at all: nothing fits
        widths = None
    loaded, skipped = split_fitting(list_embeddings(state.engine.settings.models_path), widths)
    return {
        "loaded": {e.name: e.a1111() for e in loaded},
        "skipped": {e.name: e.a1111() for e in skipped},
    }


async def loras(request: Request, a1: A1111State) -> Response:
    """The LoRA files of the models dir's `loras/` folder (use one as `<lora:name:1>`)."""
    models_path = request.app.state.engine.settings.models_path
    return JSONResponse(await asyncio.to_thread(lora_items, models_path))


async def refresh_loras(request: Request, a1: A1111State) -> Response:
    """Rescan `loras/` (every listing reads the folder anyway)."""
    await asyncio.to_thread(lora_items, request.app.state.engine.settings.models_path)
    return JSONResponse(None)


async def embeddings(request: Request, a1: A1111State) -> Response:
    """The embedding files of `embeddings/`: loaded (they fit the current model) or skipped."""
    return JSONResponse(await asyncio.to_thread(_embeddings, request.app.state, a1))


async def refresh_embeddings(request: Request, a1: A1111State) -> Response:
    """Rescan `embeddings/` (every listing reads the folder anyway)."""
    await asyncio.to_thread(_embeddings, request.app.state, a1)
    return JSONResponse(None)


def table() -> list[tuple[str, Any, str]]:
    return [
        ("loras", loras, "GET"),
        ("refresh-loras", refresh_loras, "POST"),
        ("embeddings", embeddings, "GET"),
        ("refresh-embeddings", refresh_embeddings, "POST"),
    ]
