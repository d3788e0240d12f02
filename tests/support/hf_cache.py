"""A private Hugging Face cache for a test: empty and offline, or holding a fake repo snapshot.

huggingface_hub reads HF_HOME, HF_HUB_CACHE and HF_HUB_OFFLINE once, at import; a test sets both
the variables (for subprocesses) and the library's constants (for this process).
"""

from __future__ import annotations

from pathlib import Path

import pytest

REVISION = "0123456789abcdef0123456789abcdef01234567"


def use_cache(monkeypatch: pytest.MonkeyPatch, root: Path, *, offline: bool) -> Path:
    """Point huggingface_hub at an empty cache under `root`; return the hub cache folder."""
    import huggingface_hub.constants as hf_constants

    home = root / "hf"
    cache = home / "hub"
    cache.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HOME", str(home))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", offline)
    return cache


def snapshot(cache: Path, repo: str, revision: str = REVISION) -> Path:
    """The snapshot folder of `repo` in `cache` (created, with refs/main naming it), laid out as
    huggingface_hub leaves it: models--owner--name/snapshots/<commit>/..."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(revision)
    files = folder / "snapshots" / revision
    files.mkdir(parents=True, exist_ok=True)
    return files
