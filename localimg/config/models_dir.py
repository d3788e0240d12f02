"""The models directory's one owner: it parses each YAML file once per change on disk.

The server lists, resolves and serves models on every request; re-reading every YAML each time
cost three parses per request and printed each file's warnings as often. A `ModelsDir` keeps each
file's parsed config keyed by its (mtime, size, inode), so an edited, added or removed file is
seen at the next look and an unchanged one is never parsed (nor warned about) again.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from localimg.config.files import load_config_file
from localimg.config.model import YAML_SUFFIXES, ModelConfig
from localimg.errors import ConfigError

StatKey = tuple[int, int, int]


@dataclass
class ModelEntry:
    """A YAML file found in the models dir: its config, or the error that stops it loading."""

    path: Path
    config: ModelConfig | None
    error: ConfigError | None

    @property
    def name(self) -> str:
        return self.config.name if self.config else self.path.stem


class ModelsDir:
    """The YAML models directly in one folder, re-parsed only where a file changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._parsed: dict[Path, tuple[StatKey, ModelEntry]] = {}
        self.parses = 0  # how many files were parsed (tests; a log line at debug level)

    def entries(self) -> list[ModelEntry]:
        """Every YAML model file of the folder, sorted by file name."""
        if not self.path.is_dir():
            with self._lock:
                self._parsed.clear()
            return []
        found: list[ModelEntry] = []
        seen: set[Path] = set()
        for file in sorted(self.path.iterdir()):
            if file.suffix.lower() not in YAML_SUFFIXES or file.name.startswith("."):
                continue
            try:
                stat = file.stat()
            except OSError:
                continue  # removed while listing
            key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
            seen.add(file)
            with self._lock:
                cached = self._parsed.get(file)
            if cached is not None and cached[0] == key:
                found.append(cached[1])
                continue
            entry = self._parse(file)
            with self._lock:
                self._parsed[file] = (key, entry)
            found.append(entry)
        with self._lock:
            for gone in set(self._parsed) - seen:
                del self._parsed[gone]
        return found

    def _parse(self, file: Path) -> ModelEntry:
        self.parses += 1
        try:
            return ModelEntry(file, load_config_file(file, self.path), None)
        except ConfigError as exc:
            return ModelEntry(file, None, exc)


_OWNERS: dict[Path, ModelsDir] = {}
_OWNERS_LOCK = threading.Lock()


def models_dir(path: Path) -> ModelsDir:
    """The one ModelsDir of a folder (per process), made on first use."""
    key = Path(path).absolute()
    with _OWNERS_LOCK:
        owner = _OWNERS.get(key)
        if owner is None:
            owner = _OWNERS[key] = ModelsDir(key)
        return owner


def scan_models(models_path: Path) -> list[ModelEntry]:
    """Every YAML model file directly in the models dir, sorted by name (parsed once per change)."""
    return models_dir(models_path).entries()
