"""Server-Sent Events framing, shared by OpenAI's image streams and the image jobs' events.

One place for the frame and the response headers that keep proxies (nginx) from buffering a
stream; each stream keeps its own JSON encoding, which its clients already parse.
"""

from __future__ import annotations

import json
from typing import Any

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
MEDIA_TYPE = "text/event-stream"
KEEPALIVE_COMMENT = ": keep-alive\n\n"  # an SSE comment: clients skip it, proxies see traffic


def frame(event: str, data: str) -> str:
    """One event: its `event:` line, one `data:` line, a blank line."""
    return f"event: {event}\ndata: {data}\n\n"


def compact_event(event: str, data: dict[str, Any]) -> bytes:
    """One event whose data is one line of compact JSON (OpenAI's streams)."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return frame(event, text).encode()
