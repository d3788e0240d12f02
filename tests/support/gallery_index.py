"""A gallery index for the model routes' tests: one entry, `tiny-hub`, whose files the fake
Hugging Face host serves from the tiny pipeline folder.

Kept here so that the gallery install tests and the server's model-route tests (through a
conftest fixture) build the same entry from one place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.support.fake_hosts import FakeHosts, sha256


def tiny_hub_entry(tiny_sd: Path, name: str = "tiny-hub") -> dict[str, Any]:
    """An index entry installing the tiny pipeline from huggingface://test/tiny-sd."""
    files = [
        {
            "filename": f"{name}/{p.relative_to(tiny_sd).as_posix()}",
            "sha256": sha256(p.read_bytes()),
            "uri": f"huggingface://test/tiny-sd/{p.relative_to(tiny_sd).as_posix()}",
        }
        for p in sorted(tiny_sd.rglob("*"))
        if p.is_file()
    ]
    return {
        "name": name,
        "description": "the tiny test pipeline",
        "tags": ["text-to-image"],
        "config_file": "backend: diffusers\nstep: 2\ncfg_scale: 1\n",
        "overrides": {"parameters": {"model": name}},
        "files": files,
    }


def write_tiny_hub_index(hub: FakeHosts, folder: Path, tiny_sd: Path) -> Path:
    """`folder/index.yaml` with the tiny-hub entry; the hub serves its files."""
    hub.add_repo_folder("test/tiny-sd", tiny_sd)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "index.yaml"
    path.write_text(yaml.safe_dump([tiny_hub_entry(tiny_sd)], sort_keys=False), encoding="utf-8")
    return path
