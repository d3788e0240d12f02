"""Model file downloads: URIs, resumable verified transfers, plans of many files.

This package's names are its public API: callers write `from localimg import download` and
`download.download_files(...)`.
"""

from localimg.download.hub import Cancelled, hub_endpoint, hub_error, hub_file_info
from localimg.download.progress import (
    CountingProgress,
    NullProgress,
    Progress,
)
from localimg.download.transfer import (
    CHUNK,
    DISK_MARGIN,
    Task,
    check_disk_space,
    download_files,
    fetch_one,
    fetch_tasks,
    fetch_text,
    pending,
    plan,
    run_parallel,
    sha256_file,
    verify,
)
from localimg.download.uris import (
    GITHUB_RAW_DEFAULT,
    GITHUB_RAW_ENV,
    SHA256,
    TIMEOUT,
    FileSpec,
    Source,
    SourceKind,
    github_raw_url,
    parse_uri,
    partial_path,
    resolve_ref,
    safe_target,
)

__all__ = [
    "CHUNK",
    "DISK_MARGIN",
    "GITHUB_RAW_DEFAULT",
    "GITHUB_RAW_ENV",
    "SHA256",
    "TIMEOUT",
    "Cancelled",
    "CountingProgress",
    "FileSpec",
    "NullProgress",
    "Progress",
    "Source",
    "SourceKind",
    "Task",
    "check_disk_space",
    "download_files",
    "fetch_one",
    "fetch_tasks",
    "fetch_text",
    "github_raw_url",
    "hub_endpoint",
    "hub_error",
    "hub_file_info",
    "parse_uri",
    "partial_path",
    "pending",
    "plan",
    "resolve_ref",
    "run_parallel",
    "safe_target",
    "sha256_file",
    "verify",
]
