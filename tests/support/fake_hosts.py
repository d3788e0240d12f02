"""Local stand-ins for the hosts model files come from: a file server and a Hugging Face hub.

One threaded HTTP server answers both:
- `/files/NAME`: plain downloads with `Range` support; `cut_after[NAME] = N` sends the full
  Content-Length but only N bytes, then drops the connection (an interrupted download);
- `/{owner}/{repo}/resolve/{rev}/{path}` and `/api/models/{owner}/{repo}[/revision/{rev}]`: the
  parts of the hub API that huggingface_hub's `hf_hub_download` and `model_info` use.
Every request is logged (method, path, Range header, bytes of body sent) so tests can assert
what was fetched, e.g. that a resumed download asked only for the missing bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class Logged:
    method: str
    path: str
    range: str | None
    sent: int


@dataclass
class FakeHosts:
    files: dict[str, bytes] = field(default_factory=dict)
    repos: dict[str, dict[str, bytes]] = field(default_factory=dict)
    cut_after: dict[str, int] = field(default_factory=dict)
    pages: dict[str, bytes] = field(default_factory=dict)  # any other path → its body
    log: list[Logged] = field(default_factory=list)
    url: str = ""

    def add_repo_folder(self, repo: str, folder: Path) -> None:
        self.repos[repo] = {
            str(p.relative_to(folder)).replace("\\", "/"): p.read_bytes()
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        }

    def requests(self, needle: str) -> list[Logged]:
        return [entry for entry in self.log if needle in entry.path]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    """Answers for the FakeHosts in `hosts` (set on a subclass per server, see _handler)."""

    hosts: FakeHosts
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path in self.hosts.pages:
            self._send_bytes(self.hosts.pages[path], head, content_type="text/plain")
            return
        if path.startswith("/files/"):
            name = path[len("/files/") :]
            data = self.hosts.files.get(name)
            self._send_bytes(
                data, head, cut=self.hosts.cut_after.pop(name, None) if not head else None
            )
            return
        match = re.match(r"^/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?$", path)
        if match:
            self._model_info(match.group(1), head)
            return
        match = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        if match:
            repo, _, name = match.groups()
            data = self.hosts.repos.get(repo, {}).get(name)
            extra = {"X-Repo-Commit": COMMIT}
            if data is not None:
                extra["ETag"] = f'"{sha256(data)}"'
            self._send_bytes(data, head, extra=extra)
            return
        self._send_bytes(None, head)

    def _model_info(self, repo: str, head: bool) -> None:
        files = self.hosts.repos.get(repo)
        if files is None:
            self._send_bytes(None, head)
            return
        body = json.dumps(
            {
                "id": repo,
                "modelId": repo,
                "sha": COMMIT,
                "siblings": [
                    {
                        "rfilename": name,
                        "size": len(data),
                        "lfs": {"sha256": sha256(data), "size": len(data), "pointerSize": 130},
                    }
                    for name, data in files.items()
                ],
            }
        ).encode()
        self._send_bytes(body, head, content_type="application/json")

    def _send_bytes(
        self,
        data: bytes | None,
        head: bool,
        cut: int | None = None,
        extra: dict[str, str] | None = None,
        content_type: str = "application/octet-stream",
    ) -> None:
        range_header = self.headers.get("Range")
        if data is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.send_header("X-Error-Code", "EntryNotFound")
            self.end_headers()
            self.hosts.log.append(Logged(self.command, self.path, range_header, 0))
            return
        start = 0
        status = 200
        if range_header:
            match = re.match(r"bytes=(\d+)-$", range_header)
            if match:
                start = int(match.group(1))
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    self.hosts.log.append(Logged(self.command, self.path, range_header, 0))
                    return
                status = 206
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        chunk = b"" if head else body[:cut] if cut is not None else body
        # Logged before the body goes out: a client that has read it finds its request here
        # (logged after, the next request of a fast client could be checked before it).
        self.hosts.log.append(Logged(self.command, self.path, range_header, len(chunk)))
        if not head:
            self.wfile.write(chunk)
            if cut is not None:
                self.wfile.flush()
                self.close_connection = True


def _handler(hosts: FakeHosts) -> type[BaseHTTPRequestHandler]:
    return type("Handler", (_Handler,), {"hosts": hosts})


class Running:
    """A FakeHosts served on 127.0.0.1 until `close`."""

    def __init__(self, hosts: FakeHosts) -> None:
        self.hosts = hosts
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hosts))
        self.server.daemon_threads = True
        hosts.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- fixtures (tests/conftest.py shares them with every test through pytest_plugins) --------------

import pytest  # noqa: E402


@pytest.fixture
def hosts() -> object:
    running = Running(FakeHosts())
    yield running.hosts
    running.close()


@pytest.fixture
def hub(hosts: FakeHosts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHosts:
    """The fake hosts as the Hugging Face hub: HF_ENDPOINT, online mode, a private cache."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", hosts.url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return hosts
