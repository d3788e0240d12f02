"""The request body limit (`--max-body-mb`): a 413 before an oversized body is read.

A body is refused by its Content-Length when it declares one, and cut off while it streams in
when it does not (chunked uploads), so no route ever holds more than the limit in memory.
"""

from __future__ import annotations

from localimg.errors import PayloadTooLarge
from localimg.server.http.asgi import ASGIApp, Message, Receive, Scope, Send, send_error


class BodyLimitMiddleware:
    """413 for a body over the limit: refused by Content-Length, or cut off while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"the request body is larger than the limit of {self.max_bytes} bytes "
            "(the server's --max-body-mb)"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await send_error(send, self._too_large())
                return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large()
            return message

        await self.app(scope, limited, send)
