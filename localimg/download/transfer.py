"""Resumable, verified downloads of model files into the models directory.

A model's files are large and come from flaky networks, so every download:
- writes to `.NAME.partial` next to its target and resumes it with an HTTP `Range` request, so
  Ctrl-C or a dropped connection costs nothing already fetched;
- is checked against its sha256 before it takes its final name (an atomic rename), and a mismatch
  deletes the partial file and names the file and both hashes;
- may only land inside the models directory (`..`, absolute paths and links are refused).

URIs: `huggingface://owner/repo/path[@revision]` and `hf://...` go through huggingface_hub (its
cache, `HF_ENDPOINT`, `HF_TOKEN`, offline mode, its own resume) and are then hard-linked (or
copied) into the models dir; `https://`/`http://` through httpx; `file://` is copied;
`github:owner/repo/path@ref` is read from raw.githubusercontent.com.
"""

from __future__ import annotations

import hashlib
import os
import queue
import re
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from localimg.download.hub import Cancelled, hub_download, hub_file_info
from localimg.download.progress import NullProgress, Progress
from localimg.download.uris import (
    SHA256,
    TIMEOUT,
    FileSpec,
    Source,
    parse_uri,
    partial_path,
    safe_target,
)
from localimg.errors import DownloadError, GalleryError, LocalimgError

CHUNK = 1024 * 1024
DISK_MARGIN = 64 * 1024 * 1024  # keep this much free beyond what the downloads need


def fetch_text(ref: str, *, max_bytes: int = 64 * 1024 * 1024) -> str:
    """Read a gallery index or template: a local path, file://, https:// or github: URI."""
    if not re.match(r"^[a-zA-Z][\w+.-]*:", ref) or re.match(r"^[a-zA-Z]:[\\/]", ref):
        path = Path(ref).expanduser()
        try:
            return path.read_text(encoding="utf-8")
        except OSError as exc:
            raise GalleryError(f"cannot read {path}: {exc.strerror or exc}") from None
    source = parse_uri(ref)
    if source.kind == "file":
        return fetch_text(source.location, max_bytes=max_bytes)
    if source.kind == "hub":
        return Path(hub_download(source, None)).read_text(encoding="utf-8")
    import httpx

    try:
        with httpx.Client(follow_redirects=True, timeout=TIMEOUT) as client:
            response = client.get(source.location, headers=_auth_headers(source.location))
    except httpx.HTTPError as exc:
        raise DownloadError(f"cannot fetch {ref}: {exc}") from None
    if response.status_code != 200:
        raise DownloadError(f"cannot fetch {ref}: HTTP {response.status_code}")
    if len(response.content) > max_bytes:
        raise DownloadError(f"{ref} is larger than {max_bytes} bytes")
    return response.text


# -- hashing ------------------------------------------------------------------------------------


def sha256_file(path: Path, digest: Any = None) -> Any:
    """Feed a file into a sha256 object (a new one unless given) and return the object."""
    digest = digest or hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest


def _mismatch(name: str, expected: str, actual: str) -> DownloadError:
    return DownloadError(
        f"checksum mismatch for {name}: expected sha256 {expected}, got {actual}; the downloaded "
        "file was deleted",
        code="checksum_mismatch",
    )


def verify(path: Path, expected: str | None) -> bool:
    """True when the file's sha256 is `expected` (or nothing is expected)."""
    if not expected:
        return True
    return bool(sha256_file(path).hexdigest() == expected.lower())


# -- single-file transports ------------------------------------------------------------------


def _auth_headers(url: str) -> dict[str, str]:
    """HF_TOKEN for huggingface.co URLs fetched over plain https (gated repos)."""
    host = urlsplit(url).hostname or ""
    token = os.environ.get("HF_TOKEN")
    if token and (host == "huggingface.co" or host.endswith(".huggingface.co")):
        return {"Authorization": f"Bearer {token}"}
    return {}


def _http_download(
    url: str,
    target: Path,
    expected: str | None,
    name: str,
    progress: Progress,
    cancel: threading.Event,
) -> None:
    """Fetch `url` into `target` through its partial file, resuming what is already there."""
    import httpx

    partial = partial_path(target)
    digest = hashlib.sha256()
    have = partial.stat().st_size if partial.exists() else 0
    headers = _auth_headers(url)
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        with (
            httpx.Client(follow_redirects=True, timeout=TIMEOUT) as client,
            client.stream("GET", url, headers=headers) as response,
        ):
            if response.status_code == 416 and have:
                # The partial file already holds everything: verify it below.
                progress.start(name, have, have)
                sha256_file(partial, digest)
            elif response.status_code in (200, 206):
                resumed = response.status_code == 206 and have > 0
                if resumed:
                    sha256_file(partial, digest)
                else:
                    have = 0
                length = response.headers.get("content-length")
                total = have + int(length) if length and length.isdigit() else None
                progress.start(name, total, have)
                with partial.open("ab" if resumed else "wb") as handle:
                    for block in response.iter_bytes():  # as received: an abort keeps all
                        if cancel.is_set():
                            raise Cancelled
                        handle.write(block)
                        digest.update(block)
                        progress.advance(name, len(block))
            else:
                raise DownloadError(
                    f"cannot download {name} from {url}: HTTP {response.status_code}"
                )
    except httpx.HTTPError as exc:
        raise DownloadError(
            f"cannot download {name} from {url}: {exc}; run the install again to resume"
        ) from None
    _finish(partial, target, expected, digest.hexdigest(), name)
    progress.finish(name)


def _finish(partial: Path, target: Path, expected: str | None, actual: str, name: str) -> None:
    """Verify, then give the file its final name (atomic rename)."""
    if expected and actual != expected.lower():
        partial.unlink(missing_ok=True)
        raise _mismatch(name, expected.lower(), actual)
    os.replace(partial, target)


def _copy_file(
    source: Path, target: Path, expected: str | None, name: str, progress: Progress
) -> None:
    """Copy a local file through a partial file, hashing as it goes."""
    if not source.is_file():
        raise DownloadError(f"cannot copy {name}: {source} does not exist")
    partial = partial_path(target)
    digest = hashlib.sha256()
    progress.start(name, source.stat().st_size, 0)
    with source.open("rb") as src, partial.open("wb") as dst:
        while block := src.read(CHUNK):
            dst.write(block)
            digest.update(block)
            progress.advance(name, len(block))
    _finish(partial, target, expected, digest.hexdigest(), name)
    progress.finish(name)


def _place(cached: Path, target: Path, name: str, progress: Progress) -> None:
    """Put a verified cache file at `target`: a hard link (no extra disk), else a copy."""
    partial = partial_path(target)
    partial.unlink(missing_ok=True)
    try:
        os.link(cached, partial)
    except OSError:
        shutil.copyfile(cached, partial)
    os.replace(partial, target)


def _from_hub(
    source: Source,
    target: Path | None,
    expected: str | None,
    name: str,
    progress: Progress,
    cancel: threading.Event,
) -> None:
    hub_expected = None
    if not expected:
        _, hub_expected = hub_file_info(source)
    cached = Path(hub_download(source, name, progress, cancel)).resolve()
    progress.finish(name)
    want = (expected or hub_expected or "").lower()
    if want:
        actual = sha256_file(cached).hexdigest()
        if actual != want:
            cached.unlink(missing_ok=True)
            raise _mismatch(name, want, actual)
    if target is not None:
        _place(cached, target, name, progress)


# -- planning and running a set of downloads ------------------------------------------------


@dataclass
class Task:
    """One file to fetch: its source, final path (None: hub cache only) and expected hash."""

    name: str
    source: Source
    target: Path | None
    sha256: str | None
    size: int | None = None

    @property
    def partial_bytes(self) -> int:
        if self.target is None:
            return 0
        partial = partial_path(self.target)
        return partial.stat().st_size if partial.exists() else 0


def plan(files: Sequence[FileSpec], root: Path) -> list[Task]:
    """Validate every file name and URI before anything is fetched."""
    tasks: list[Task] = []
    seen: set[Path] = set()
    for spec in files:
        target = safe_target(root, spec.filename)
        if target in seen:
            raise GalleryError(f"file {spec.filename!r} is listed twice")
        seen.add(target)
        sha = (spec.sha256 or "").strip().lower() or None
        if sha is not None and not SHA256.match(sha):
            raise GalleryError(
                f"file {spec.filename!r}: sha256 {spec.sha256!r} is not 64 hex digits"
            )
        tasks.append(Task(spec.filename, parse_uri(spec.uri), target, sha))
    return tasks


def _remote_size(task: Task) -> int | None:
    source = task.source
    if source.kind == "file":
        path = Path(source.location)
        return path.stat().st_size if path.is_file() else None
    if source.kind == "hub":
        size, sha = hub_file_info(source)
        if not task.sha256 and sha:
            task.sha256 = sha
        return size
    import httpx

    try:
        with httpx.Client(follow_redirects=True, timeout=TIMEOUT) as client:
            response = client.head(source.location, headers=_auth_headers(source.location))
    except httpx.HTTPError:
        return None
    length = response.headers.get("content-length")
    return int(length) if response.status_code == 200 and length and length.isdigit() else None


def check_disk_space(tasks: Sequence[Task], root: Path) -> None:
    """Refuse to start when the files cannot fit (sizes the servers report, minus partials)."""
    needed = 0
    for task in tasks:
        task.size = _remote_size(task)
        if task.size is not None:
            needed += max(task.size - task.partial_bytes, 0)
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed and needed + DISK_MARGIN > free:
        raise DownloadError(
            f"not enough disk space in {root}: the files need {_size(needed)}, "
            f"{_size(free)} is free",
            code="insufficient_storage",
        )


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n} B"


def fetch_one(task: Task, progress: Progress, cancel: threading.Event) -> None:
    """Fetch one task to its final place (or the hub cache)."""
    if task.target is not None:
        task.target.parent.mkdir(parents=True, exist_ok=True)
    if task.source.kind == "hub":
        _from_hub(task.source, task.target, task.sha256, task.name, progress, cancel)
    elif task.source.kind == "file":
        assert task.target is not None
        _copy_file(Path(task.source.location), task.target, task.sha256, task.name, progress)
    else:
        assert task.target is not None
        _http_download(task.source.location, task.target, task.sha256, task.name, progress, cancel)


def run_parallel(
    tasks: Sequence[Task],
    progress: Progress | None = None,
    *,
    workers: int = 4,
    cancel: threading.Event | None = None,
    fetch: Callable[[Task, Progress, threading.Event], None] = fetch_one,
) -> None:
    """Fetch tasks on daemon threads; the first error stops the rest (their partials stay).

    Daemon threads, so that Ctrl-C returns at once: the main thread sets `cancel`, each thread
    stops at its next chunk, and what it fetched stays in its partial file for the next run.
    """
    progress = progress or NullProgress()
    cancel = cancel or threading.Event()
    pending: queue.Queue[Task] = queue.Queue()
    for task in tasks:
        pending.put(task)
    errors: list[BaseException] = []
    done = threading.Event()
    lock = threading.Lock()
    remaining = [len(tasks)]

    def worker() -> None:
        while not cancel.is_set():
            try:
                task = pending.get_nowait()
            except queue.Empty:
                return
            try:
                fetch(task, progress, cancel)
            except Cancelled:
                pass
            except BaseException as exc:
                with lock:
                    errors.append(exc)
                cancel.set()
            finally:
                with lock:
                    remaining[0] -= 1
                    if remaining[0] <= 0:
                        done.set()

    if not tasks:
        return
    threads = [
        threading.Thread(target=worker, name=f"localimg-download-{i}", daemon=True)
        for i in range(max(1, min(workers, len(tasks))))
    ]
    for thread in threads:
        thread.start()
    try:
        while not done.wait(0.2):
            if all(not t.is_alive() for t in threads):
                break
    except KeyboardInterrupt:
        cancel.set()
        raise
    _raise_outcome(errors, cancel)


def _raise_outcome(errors: list[BaseException], cancel: threading.Event) -> None:
    """The first worker's error as a localimg error, or the cancellation; nothing if all done."""
    if errors:
        first = errors[0]
        if isinstance(first, LocalimgError):
            raise first
        raise DownloadError(f"download failed: {type(first).__name__}: {first}") from first
    if cancel.is_set():
        raise DownloadError("the download was cancelled; run it again to resume", code="cancelled")


def pending(tasks: Sequence[Task]) -> list[Task]:
    """The tasks whose file is missing or wrong (a wrong file is deleted so it is fetched anew).

    A file with a known sha256 is re-hashed: installing twice verifies the files.
    """
    todo = []
    for task in tasks:
        if task.target is None or not task.target.is_file():
            todo.append(task)
        elif task.sha256 and not verify(task.target, task.sha256):
            task.target.unlink()
            todo.append(task)
    return todo


def fetch_tasks(
    tasks: Sequence[Task],
    root: Path,
    progress: Progress | None = None,
    *,
    workers: int = 4,
    cancel: threading.Event | None = None,
    check_space: bool = True,
) -> None:
    """Check the disk, then fetch the tasks whose files are not already right."""
    todo = pending(tasks)
    root.mkdir(parents=True, exist_ok=True)
    if check_space and todo:
        check_disk_space(todo, root)
    run_parallel(todo, progress, workers=workers, cancel=cancel)


def download_files(
    files: Sequence[FileSpec],
    root: Path,
    progress: Progress | None = None,
    *,
    workers: int = 4,
    cancel: threading.Event | None = None,
    check_space: bool = True,
) -> list[Path]:
    """Fetch files into `root` (the models dir) in parallel; files already right are kept."""
    tasks = plan(files, root)
    fetch_tasks(tasks, root, progress, workers=workers, cancel=cancel, check_space=check_space)
    return [t.target for t in tasks if t.target is not None]
