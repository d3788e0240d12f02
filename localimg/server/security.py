"""API keys, the body size limit and CORS: what stands between the network and the engine.

Both checks are plain ASGI middleware so that they run before any body is read and answer in
OpenAI's error shape. Health routes and generated-image files stay open: orchestrators probe
the first without credentials, and browsers load the second from `<img src>` (their names are
random and they expire).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from localimg.errors import LocalimgError, PayloadTooLarge, Unauthorized

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PROTECTED_PREFIX = "/v1"


class NotFound(LocalimgError):
    """A path that names nothing (an unknown route, an expired image)."""

    http_status = 404
    error_type = "invalid_request_error"
    default_code = "not_found"


async def send_error(send: Send, error: LocalimgError) -> None:
    """Answer an error directly from middleware, in OpenAI's shape."""
    body = json.dumps(error.to_openai()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.http_status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def key_matches(presented: str, keys: Iterable[str]) -> bool:
    """Compare against every key in constant time (no early exit that leaks which one)."""
    found = False
    for key in keys:
        found |= hmac.compare_digest(presented.encode(), key.encode())
    return found


def bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def basic_password(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The password of `Authorization: Basic base64(user:password)` (any user name).

    A1111 clients (SillyTavern, Open WebUI) send Basic auth; SillyTavern encodes its setting as
    typed, so a value without a colon is taken whole as the password.
    """
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() != "basic" or not token.strip():
                return None
            try:
                decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
            except (binascii.Error, ValueError):
                return None
            user, colon, password = decoded.partition(":")
            return password if colon else user
    return None


def check_key(headers: Iterable[tuple[bytes, bytes]], keys: tuple[str, ...]) -> None:
    """The one API key check (the /v1 middleware, LocalAI's and A1111's routes): 401 unless a
    configured key is presented as `Authorization: Bearer <key>`, or as the password of
    `Authorization: Basic` (any user name: A1111 clients send Basic); nothing to check when no
    keys are set, so the empty Basic header those clients send without credentials passes."""
    if not keys:
        return
    headers = list(headers)
    token = bearer_token(headers)
    if token is None:
        token = basic_password(headers)
    if token is None:
        raise Unauthorized(
            "missing API key: send 'Authorization: Bearer <key>' (or Basic with the key as "
            "the password)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not key_matches(token, keys):
        raise Unauthorized("invalid API key", headers={"WWW-Authenticate": "Bearer"})


class ApiKeyMiddleware:
    """Bearer auth on every /v1 route when keys are configured (CORS preflights pass)."""

    def __init__(self, app: ASGIApp, keys: tuple[str, ...]) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            not self.keys
            or scope["type"] != "http"
            or scope["method"] == "OPTIONS"
            or not (scope["path"] == PROTECTED_PREFIX or scope["path"].startswith("/v1/"))
        ):
            await self.app(scope, receive, send)
            return
        try:
            check_key(scope["headers"], self.keys)
        except Unauthorized as exc:
            await send_error(send, exc)
            return
        await self.app(scope, receive, send)


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
