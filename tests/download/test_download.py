"""download.py against a local file server and a fake hub: URIs, safety, hashes, resume."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from localimg import download
from localimg.download import FileSpec
from localimg.errors import DownloadError, GalleryError
from tests.support.fake_hosts import FakeHosts, sha256

DATA = bytes(range(256)) * 4096  # 1 MiB


def test_parse_uri_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    assert download.parse_uri("huggingface://city96/FLUX.1-dev-gguf/flux1-dev-Q2_K.gguf") == (
        download.Source("hub", "city96/FLUX.1-dev-gguf", "flux1-dev-Q2_K.gguf")
    )
    src = download.parse_uri("hf://owner/repo/sub/dir/file.safetensors@v1")
    assert (src.location, src.path_in_repo, src.revision) == (
        "owner/repo",
        "sub/dir/file.safetensors",
        "v1",
    )
    assert download.parse_uri("file:///tmp/x.bin") == download.Source("file", "/tmp/x.bin")
    monkeypatch.delenv(download.GITHUB_RAW_ENV, raising=False)
    assert download.parse_uri("github:mudler/LocalAI/gallery/flux-ggml.yaml@master").location == (
        "https://raw.githubusercontent.com/mudler/LocalAI/master/gallery/flux-ggml.yaml"
    )
    with pytest.raises(GalleryError, match="unsupported URI 'ftp://x/y'"):
        download.parse_uri("ftp://x/y")
    with pytest.raises(GalleryError, match="expected huggingface://owner/repo/path"):
        download.parse_uri("huggingface://owner/repo")


@pytest.mark.parametrize(
    "name", ["../evil.bin", "/etc/passwd", "a/../../evil", "sub/../../x", "", "C:/x", "a//b", "."]
)
def test_unsafe_names_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(GalleryError, match="unsafe file name"):
        download.safe_target(tmp_path, name)


def test_links_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "models"
    root.mkdir()
    (root / "link").symlink_to(outside)
    with pytest.raises(GalleryError, match="is a link"):
        download.safe_target(root, "link/file.bin")
    assert download.safe_target(root, "sub/file.bin") == root.resolve() / "sub" / "file.bin"


def test_download_verifies_and_renames(hosts: FakeHosts, tmp_path: Path) -> None:
    hosts.files["a.bin"] = DATA
    hosts.files["b.bin"] = DATA[:1000]
    paths = download.download_files(
        [
            FileSpec("a.bin", f"{hosts.url}/files/a.bin", sha256(DATA)),
            FileSpec("sub/b.bin", f"{hosts.url}/files/b.bin", sha256(DATA[:1000])),
        ],
        tmp_path,
    )
    assert [p.read_bytes() for p in paths] == [DATA, DATA[:1000]]
    assert not list(tmp_path.rglob("*.partial"))


def test_checksum_mismatch_leaves_nothing(hosts: FakeHosts, tmp_path: Path) -> None:
    hosts.files["a.bin"] = DATA
    wrong = "0" * 64
    with pytest.raises(DownloadError) as info:
        download.download_files([FileSpec("a.bin", f"{hosts.url}/files/a.bin", wrong)], tmp_path)
    message = info.value.message
    assert "a.bin" in message and wrong in message and sha256(DATA) in message
    assert info.value.code == "checksum_mismatch"
    assert list(tmp_path.iterdir()) == []


def test_interrupted_download_resumes(hosts: FakeHosts, tmp_path: Path) -> None:
    hosts.files["big.bin"] = DATA
    hosts.cut_after["big.bin"] = 300_000
    spec = FileSpec("big.bin", f"{hosts.url}/files/big.bin", sha256(DATA))
    with pytest.raises(DownloadError, match="run the install again to resume"):
        download.download_files([spec], tmp_path)
    partial = tmp_path / ".big.bin.partial"
    assert partial.stat().st_size == 300_000
    assert not (tmp_path / "big.bin").exists()

    download.download_files([spec], tmp_path)
    assert (tmp_path / "big.bin").read_bytes() == DATA
    gets = [r for r in hosts.requests("/files/big.bin") if r.method == "GET"]
    assert gets[-1].range == "bytes=300000-"
    assert gets[-1].sent == len(DATA) - 300_000
    assert not partial.exists()


def test_installed_file_is_verified_not_refetched(hosts: FakeHosts, tmp_path: Path) -> None:
    hosts.files["a.bin"] = DATA
    spec = FileSpec("a.bin", f"{hosts.url}/files/a.bin", sha256(DATA))
    download.download_files([spec], tmp_path)
    count = len(hosts.log)
    download.download_files([spec], tmp_path)
    assert len(hosts.log) == count
    (tmp_path / "a.bin").write_bytes(b"corrupted")
    download.download_files([spec], tmp_path)
    assert (tmp_path / "a.bin").read_bytes() == DATA


def test_disk_space_checked_first(
    hosts: FakeHosts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hosts.files["a.bin"] = DATA
    real = shutil.disk_usage

    def tiny_disk(path: object) -> object:
        usage = real(path)  # type: ignore[arg-type]
        return type(usage)(usage.total, usage.total - 1000, 1000)

    monkeypatch.setattr(shutil, "disk_usage", tiny_disk)
    with pytest.raises(DownloadError, match=r"not enough disk space.*1\.0 MiB"):
        download.download_files([FileSpec("a.bin", f"{hosts.url}/files/a.bin")], tmp_path)
    assert not [r for r in hosts.log if r.method == "GET"]


def test_file_uri_copied(tmp_path: Path) -> None:
    source = tmp_path / "src.bin"
    source.write_bytes(DATA)
    root = tmp_path / "models"
    download.download_files([FileSpec("x.bin", source.as_uri(), sha256(DATA))], root)
    assert (root / "x.bin").read_bytes() == DATA


def test_hub_file_through_huggingface_hub(hub: FakeHosts, tmp_path: Path) -> None:
    hub.repos["owner/repo"] = {"weights/model.gguf": DATA}
    root = tmp_path / "models"
    download.download_files(
        [FileSpec("model.gguf", "huggingface://owner/repo/weights/model.gguf", sha256(DATA))], root
    )
    assert (root / "model.gguf").read_bytes() == DATA
    cached = list((tmp_path / "hf-cache").rglob("model.gguf"))
    assert cached, "the file went through huggingface_hub's cache"
    assert os.stat(root / "model.gguf").st_nlink >= 2  # hard-linked, not a second copy


def test_hub_file_checked_against_hub_sha(hub: FakeHosts, tmp_path: Path) -> None:
    hub.repos["owner/repo"] = {"model.gguf": DATA}
    root = tmp_path / "models"
    # No sha256 in the entry: the hub's LFS sha256 is used, and a wrong one in the entry fails.
    download.download_files([FileSpec("model.gguf", "hf://owner/repo/model.gguf")], root)
    assert (root / "model.gguf").read_bytes() == DATA
    with pytest.raises(DownloadError, match=r"checksum mismatch for other\.gguf"):
        download.download_files(
            [FileSpec("other.gguf", "hf://owner/repo/model.gguf", "1" * 64)], root
        )
    assert not (root / "other.gguf").exists()


def test_hub_missing_file_is_a_clear_error(hub: FakeHosts, tmp_path: Path) -> None:
    hub.repos["owner/repo"] = {"model.gguf": DATA}
    with pytest.raises(DownloadError, match=r"no such file|not found"):
        download.download_files([FileSpec("x.gguf", "hf://owner/repo/missing.gguf")], tmp_path)


def test_cancel_leaves_a_resumable_partial(hosts: FakeHosts, tmp_path: Path) -> None:
    """Ctrl-C (the cancel event) stops at the next chunk and keeps what was fetched."""
    import threading

    hosts.files["big.bin"] = DATA * 4
    cancel = threading.Event()

    class StopAfterFirstChunk(download.NullProgress):
        def advance(self, name: str, nbytes: int) -> None:
            cancel.set()

    spec = FileSpec("big.bin", f"{hosts.url}/files/big.bin", sha256(DATA * 4))
    with pytest.raises(DownloadError, match="cancelled; run it again to resume"):
        download.download_files([spec], tmp_path, StopAfterFirstChunk(), cancel=cancel)
    kept = (tmp_path / ".big.bin.partial").stat().st_size
    assert 0 < kept < len(DATA * 4)
    download.download_files([spec], tmp_path)
    assert (tmp_path / "big.bin").read_bytes() == DATA * 4
    assert [r.range for r in hosts.requests("/files/big.bin") if r.method == "GET"][-1] == (
        f"bytes={kept}-"
    )


def test_hub_file_missing_from_the_cache_offline_says_offline(
    hub: FakeHosts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """huggingface_hub's offline cache miss (LocalEntryNotFoundError) is a subclass of its
    missing-file error: it must read as offline, not as a file missing from the repository."""
    from huggingface_hub import constants

    hub.repos["owner/repo"] = {"model.gguf": DATA}
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DownloadError) as err:
        download.download_files([FileSpec("m.gguf", "hf://owner/repo/model.gguf")], tmp_path)
    assert "not in the local Hugging Face cache and the hub cannot be reached" in err.value.message
    assert "no such file" not in err.value.message


def test_offline_download_missing_from_an_empty_cache_says_offline_mode_is_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HF_HUB_OFFLINE=1 and an empty Hugging Face cache: the file is not in the local cache and
    offline mode is on, never "no such file in the repository" (LocalEntryNotFoundError
    subclasses EntryNotFoundError)."""
    from tests.support.hf_cache import use_cache

    use_cache(monkeypatch, tmp_path, offline=True)
    with pytest.raises(DownloadError) as err:
        download.download_files([FileSpec("m.gguf", "hf://owner/repo/model.gguf")], tmp_path)
    message = err.value.message
    assert "owner/repo/model.gguf is not in the local Hugging Face cache" in message
    assert "offline mode is on: HF_HUB_OFFLINE=1" in message
    assert "no such file in the repository" not in message


def test_hub_errors_read_the_same_narrowest_class_first() -> None:
    from huggingface_hub import errors as hf_errors

    offline = download.hub_error(hf_errors.LocalEntryNotFoundError("miss"), "hf://o/r/f")
    assert "not in the local Hugging Face cache" in offline.message
    missing = download.hub_error(hf_errors.EntryNotFoundError("404 f"), "hf://o/r/f")
    assert missing.message == "hf://o/r/f: no such file in the repository (404 f)"
    switched_off = download.hub_error(hf_errors.OfflineModeIsEnabled("off"), "hf://o/r/f")
    assert "hub cannot be reached" in switched_off.message
