"""Where model files come from: URIs (hub, http, file, github:), index-relative references,
small text fetches, and the safe place a file may land in the models directory.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal
from urllib.parse import unquote, urljoin, urlsplit

from localimg.errors import GalleryError

GITHUB_RAW_ENV = "LOCALIMG_GITHUB_RAW"  # where github: URIs are read from (tests, mirrors)
GITHUB_RAW_DEFAULT = "https://raw.githubusercontent.com"
TIMEOUT = 30.0
SHA256 = re.compile(r"^[0-9a-f]{64}$")  # a sha256 hex digest, as the hub's LFS etag

SourceKind = Literal["hub", "http", "file"]


@dataclass(frozen=True)
class Source:
    """Where one file comes from, after the URI scheme has been resolved."""

    kind: SourceKind
    location: str  # URL, local path, or hub repo id
    path_in_repo: str = ""
    revision: str | None = None

    def __str__(self) -> str:
        if self.kind == "hub":
            at = f"@{self.revision}" if self.revision else ""
            return f"huggingface://{self.location}/{self.path_in_repo}{at}"
        return self.location


@dataclass(frozen=True)
class FileSpec:
    """One file of a gallery entry: where it goes (relative to the models dir) and where from."""

    filename: str
    uri: str
    sha256: str | None = None


def github_raw_url(uri: str) -> str:
    """`github:owner/repo/path/to/file@ref` → its raw URL (ref defaults to `main`)."""
    rest = uri.split(":", 1)[1].lstrip("/")
    rest, _, ref = rest.rpartition("@") if "@" in rest else (rest, "", "main")
    parts = rest.split("/", 2)
    if len(parts) < 3 or not all(parts):
        raise GalleryError(f"bad github URI {uri!r}: expected github:owner/repo/path@ref")
    owner, repo, path = parts
    base = os.environ.get(GITHUB_RAW_ENV, GITHUB_RAW_DEFAULT).rstrip("/")
    return f"{base}/{owner}/{repo}/{ref or 'main'}/{path}"


def parse_uri(uri: str) -> Source:
    """Resolve a gallery URI to a `Source`; unknown schemes are refused naming the known ones."""
    text = uri.strip()
    scheme = text.split(":", 1)[0].lower() if ":" in text else ""
    if scheme in ("huggingface", "hf"):
        rest = text.split("://", 1)[1] if "://" in text else text.split(":", 1)[1]
        rest, revision = _split_revision(rest.strip("/"))
        parts = rest.split("/", 2)
        if len(parts) < 3 or not all(parts):
            raise GalleryError(
                f"bad hub URI {uri!r}: expected huggingface://owner/repo/path/to/file"
            )
        return Source("hub", f"{parts[0]}/{parts[1]}", parts[2], revision)
    if scheme in ("http", "https"):
        return Source("http", text)
    if scheme == "file":
        return Source("file", unquote(urlsplit(text).path))
    if scheme == "github":
        return Source("http", github_raw_url(text))
    raise GalleryError(
        f"unsupported URI {uri!r}: use huggingface://, hf://, https://, http://, file:// or "
        "github:owner/repo/path@ref"
    )


def _split_revision(path: str) -> tuple[str, str | None]:
    """`owner/repo/file@rev` → (`owner/repo/file`, `rev`); an `@` inside a name is kept."""
    head, sep, tail = path.rpartition("@")
    if sep and tail and "/" not in tail and "." not in tail:
        return head, tail
    return path, None


def resolve_ref(ref: str, base: str | None) -> str:
    """A template reference relative to the index that names it (a path or URL)."""
    if re.match(r"^[a-zA-Z][\w+.-]*:", ref) and not re.match(r"^[a-zA-Z]:[\\/]", ref):
        return ref
    if base is None:
        return str(Path(ref).expanduser().resolve())
    if re.match(r"^https?://", base):
        return urljoin(base, ref)
    if base.startswith("github:"):
        return urljoin(github_raw_url(base), ref)
    base_path = Path(unquote(urlsplit(base).path) if base.startswith("file:") else base)
    return str((base_path.parent / ref).resolve())


# -- file names from an index -----------------------------------------------------------------


def safe_target(root: Path, filename: str) -> Path:
    """Where `filename` goes under `root`; refuses anything that could leave `root`."""
    name = filename.replace("\\", "/")
    pure = PurePosixPath(name)
    if (
        not name.strip()
        or "\x00" in name
        or pure.is_absolute()
        or re.match(r"^[a-zA-Z]:", name)
        or any(part in ("..", "") for part in name.split("/"))
        or pure.name in (".", "")
    ):
        raise GalleryError(
            f"unsafe file name {filename!r}: a gallery file name must be a relative path inside "
            "the models directory (no '..', no absolute path)"
        )
    root_resolved = root.resolve()
    target = root_resolved.joinpath(*pure.parts)
    current = root_resolved
    for part in pure.parts:
        current = current / part
        if current.is_symlink():
            raise GalleryError(
                f"unsafe file name {filename!r}: {current} is a link; gallery files may not be "
                "written through links"
            )
    if not target.resolve().is_relative_to(root_resolved):
        raise GalleryError(f"unsafe file name {filename!r}: it resolves outside {root}")
    return target


def partial_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.partial")
