"""The guarded URL fetcher: schemes, private addresses, redirects re-checked, size limits."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from localimg.errors import InvalidRequest, PayloadTooLarge
from localimg.media.fetch import FetchPolicy, check_url, fetch
from tests.support.server_support import png_bytes

PNG = png_bytes((8, 8))


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/img.png":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            self.wfile.write(PNG)
        elif self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", self.path.split("to=", 1)[1])
            self.end_headers()
        else:
            self.send_response(404)
            self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def local() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://localhost/x",
        "http://10.0.0.1/x",
        "http://192.168.1.1/x",
        "http://172.16.0.1/x",
        "http://169.254.169.254/latest",
        "http://[::1]/x",
        "http://[fe80::1]/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://0.0.0.0/x",
    ],
)
def test_private_addresses_are_refused(url: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_url(url, FetchPolicy())
    assert caught.value.code == "url_not_allowed"


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://1.1.1.1/x", "data:,x", "//x/y"])
def test_only_http_and_https(url: str) -> None:
    with pytest.raises(InvalidRequest, match="only http and https"):
        check_url(url, FetchPolicy())


def test_public_address_passes_the_check() -> None:
    assert check_url("https://1.1.1.1/x.png", FetchPolicy())[2] == "1.1.1.1"


def test_fetch_with_private_allowed(local: str) -> None:
    assert fetch(f"{local}/img.png", FetchPolicy(allow_private=True)) == PNG
    with pytest.raises(InvalidRequest, match="private"):
        fetch(f"{local}/img.png", FetchPolicy())


def test_redirects_are_checked_again(local: str) -> None:
    policy = FetchPolicy(allow_private=True)
    assert fetch(f"{local}/redirect?to=/img.png", policy) == PNG
    with pytest.raises(InvalidRequest, match="only http and https"):
        fetch(f"{local}/redirect?to=file:///etc/passwd", policy)
    with pytest.raises(InvalidRequest, match="redirects more than"):
        fetch(
            f"{local}/redirect?to=/redirect?to=/redirect?to=/redirect?to=/redirect?to="
            "/redirect?to=/img.png",
            policy,
        )


def test_size_limit_and_http_errors(local: str) -> None:
    with pytest.raises(PayloadTooLarge):
        fetch(f"{local}/img.png", FetchPolicy(allow_private=True, max_bytes=10))
    with pytest.raises(InvalidRequest, match="404"):
        fetch(f"{local}/missing", FetchPolicy(allow_private=True))
