"""API keys: the one check every protected route shares (`--api-key`).

Plain ASGI middleware for /v1, so that it runs before any body is read and answers in OpenAI's
error shape; LocalAI's, A1111's and the metrics routes call `check_key` themselves. Health
routes and generated-image files stay open: orchestrators probe the first without credentials,
and browsers load the second from `<img src>` (their names are random and they expire).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Iterable

from localimg.errors import Unauthorized
from localimg.server.http.asgi import ASGIApp, Receive, Scope, Send, send_error

PROTECTED_PREFIX = "/v1"


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
