"""API keys (`--api-key`): required on every route unless its path is on the public list.

Secure by default: a new route needs the key without anyone remembering to check it, because the
check is plain ASGI middleware in front of all routes (it runs before any body is read). The
public list is short and explicit (PUBLIC_PATHS): the page and its files under /ui (the page
asks for the key itself and sends it with its API calls), the health probes orchestrators send
without credentials, /openapi.json, and the url-format output files under /generated, which
browsers load from `<img src>` like OpenAI's own image URLs (their names are random tokens and
they expire). CORS preflights (OPTIONS) pass too: browsers send them without credentials.

Each API family answers the 401 in its own shape: the middleware takes a renderer per path
prefix (A1111's for /sdapi), OpenAI's error object everywhere else.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Callable, Iterable, Mapping

from starlette.responses import Response

from localimg.errors import LocalimgError, Unauthorized
from localimg.server.errors import error_response
from localimg.server.http.asgi import ASGIApp, Receive, Scope, Send

# Paths open without the key; `*` stands for one path segment, `**` for anything below.
# `--public-metrics` adds /metrics.
PUBLIC_PATHS = (
    "/",
    "/healthz",
    "/readyz",
    "/openapi.json",
    "/ui/**",  # the page's files (and its sampler table); bad names answer the page's 404
    "/generated/*",  # url-format outputs: random names, expiring
)

ErrorShape = Callable[[LocalimgError], Response]


def public_matcher(paths: Iterable[str]) -> re.Pattern[str]:
    """One regular expression for a public list (`*`: one segment, `**`: anything below)."""
    parts = [re.escape(path).replace(r"\*\*", ".+").replace(r"\*", "[^/]+") for path in paths]
    return re.compile("(?:" + "|".join(parts) + ")")


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
    """The one API key check (ApiKeyMiddleware's, for every non-public route): 401 unless a
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
    """The key on every route but the public ones, when keys are configured (module docstring).

    `shapes` maps a path prefix to its API family's 401 renderer; other paths answer OpenAI's
    error object. `public` is the public list (PUBLIC_PATHS unless given).
    """

    def __init__(
        self,
        app: ASGIApp,
        keys: tuple[str, ...],
        public: Iterable[str] = PUBLIC_PATHS,
        shapes: Mapping[str, ErrorShape] | None = None,
    ) -> None:
        self.app = app
        self.keys = keys
        self.public = public_matcher(public)
        self.shapes = dict(shapes or {})

    def is_public(self, path: str) -> bool:
        return self.public.fullmatch(path) is not None

    def shape_for(self, path: str) -> ErrorShape:
        for prefix, shape in self.shapes.items():
            if path.startswith(prefix):
                return shape
        return error_response

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            not self.keys
            or scope["type"] != "http"
            or scope["method"] == "OPTIONS"
            or self.is_public(scope["path"])
        ):
            await self.app(scope, receive, send)
            return
        try:
            check_key(scope["headers"], self.keys)
        except Unauthorized as exc:
            response = self.shape_for(scope["path"])(exc)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
