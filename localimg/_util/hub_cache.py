"""What of a diffusers repo on the hub is in the local Hugging Face cache, found offline.

huggingface_hub keeps a repo's files under HF_HUB_CACHE/models--owner--name/snapshots/<commit>/;
`try_to_load_from_cache` finds the snapshot a revision (branch, tag or commit) names by reading the
cache's refs only. This is for the places where asking the hub would be wrong: the memory estimate
before a load (which must never download), and a gallery install in offline mode (which must say
whether the weights are there). Below both engine/ and gallery/, which may not import each other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A component folder that holds a model has a `config.json` (a diffusers or transformers model);
# schedulers, tokenizers and feature extractors have their own *_config.json and no weights.
MODEL_CONFIG = "config.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin")
# Loading never builds these, whatever model_index.json says (load/loading.py passes None).
SKIPPED_COMPONENTS = frozenset({"safety_checker"})


@dataclass(frozen=True)
class CachedPipeline:
    """A diffusers repo as the local cache holds it."""

    snapshot: Path  # the snapshot folder (model_index.json and one folder per component)
    model_folders: tuple[Path, ...]  # the components that load weights, in model_index's order


def _is_component(value: Any) -> bool:
    """model_index.json's `[library, class]` pair of a component that is present."""
    return isinstance(value, list) and len(value) == 2 and all(value)


def cached_pipeline(repo: str, revision: str | None = None) -> CachedPipeline | str:
    """The cached snapshot of diffusers repo `repo` at `revision` (None: main) and the component
    folders whose weights loading reads; or, when the cache lacks something loading needs, why
    (a sentence). Never asks the hub."""
    from huggingface_hub import try_to_load_from_cache

    where = "the local Hugging Face cache"
    try:
        found = try_to_load_from_cache(repo, "model_index.json", revision=revision)
    except Exception as exc:  # an id or revision huggingface_hub refuses
        return f"{repo} cannot be looked up in {where} ({type(exc).__name__}: {exc})"
    if not isinstance(found, str):
        return f"{repo} is not in {where} (its model_index.json is not)"
    index_path = Path(found)
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"{repo}'s model_index.json in {where} cannot be read ({exc})"
    if not isinstance(index, dict):
        return f"{repo}'s model_index.json in {where} is not a JSON object"
    snapshot = index_path.parent
    folders: list[Path] = []
    for name, value in index.items():
        if name.startswith("_") or name in SKIPPED_COMPONENTS or not _is_component(value):
            continue
        folder = snapshot / name
        if not folder.is_dir():
            return f"{repo}'s {name} is not in {where}"
        if not (folder / MODEL_CONFIG).is_file():
            continue  # a scheduler, tokenizer or feature extractor: no weights
        if not any(p.name.endswith(WEIGHT_SUFFIXES) for p in folder.iterdir()):
            return f"{repo}'s {name} weights are not in {where}"
        folders.append(folder)
    return CachedPipeline(snapshot, tuple(folders))
