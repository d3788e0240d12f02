"""`<lora:name:weight>` and `<lora:name>` prompt tags, for every engine: the tag syntax, the
weight's range, and the file each name stands for inside a LoRA folder (extension optional).

What an engine does with the files is its own: the ggml engine hands them to the library as
tags (backends/ggml/lora.py), the diffusers engine loads them as peft adapters for one request
(backends/diffusers/load/lora_adapters.py)."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from localimg.errors import InvalidRequest

LORA_SUFFIXES = (".safetensors", ".pt", ".bin", ".ckpt", ".gguf")
# <lora:name> or <lora:name:weight>; the name may not hold ':' or '>'
LORA_TAG = re.compile(r"<lora:([^:>]+)(?::([^>]*))?>")
MAX_WEIGHT = 10.0


def strip_tags(prompt: str) -> str:
    """The prompt without its LoRA tags (what the text encoder should see)."""
    return LORA_TAG.sub("", prompt).strip()


def parse_tags(prompt: str) -> list[tuple[str, float]]:
    """(name, weight) of each tag in order; a weight that is not a number in -10..10 is refused."""
    found = []
    for match in LORA_TAG.finditer(prompt):
        name, weight_text = match.group(1).strip(), (match.group(2) or "1").strip()
        try:
            weight = float(weight_text)
        except ValueError:
            raise InvalidRequest(
                f"LoRA tag {match.group(0)!r}: the weight must be a number, e.g. <lora:{name}:0.8>",
                param="prompt",
            ) from None
        if not -MAX_WEIGHT <= weight <= MAX_WEIGHT:
            raise InvalidRequest(
                f"LoRA tag {match.group(0)!r}: the weight must be between {-MAX_WEIGHT:g} "
                f"and {MAX_WEIGHT:g}",
                param="prompt",
            )
        found.append((name, weight))
    return found


def tag_key(*prompts: str | None) -> tuple[tuple[str, str], ...]:
    """The tags of some prompts as written, sorted: requests with different keys ask for
    different LoRAs (never an error: the request's own check reports bad tags)."""
    tags = (
        (m.group(1).strip(), (m.group(2) or "1").strip())
        for prompt in prompts
        if prompt
        for m in LORA_TAG.finditer(prompt)
    )
    return tuple(sorted(tags))


def lora_files(folder: Path) -> list[str]:
    """The LoRA files' names in `folder`, without extension."""
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.iterdir() if p.suffix in LORA_SUFFIXES and p.is_file())


def find_lora(name: str, folder: Path) -> Path:
    """`name` (with or without its extension) inside `folder`; a clear error when absent."""
    candidate = (folder / name).resolve()
    if not candidate.is_relative_to(folder.resolve()):
        raise InvalidRequest(
            f"LoRA {name!r} points outside the LoRA folder {folder}", param="prompt"
        )
    tries = [candidate, *(candidate.with_name(candidate.name + s) for s in LORA_SUFFIXES)]
    for path in tries:
        if path.is_file():
            return path
    known = lora_files(folder)
    close = difflib.get_close_matches(Path(name).name, known, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    listing = (
        f"LoRA files there: {', '.join(known[:20])}" if known else "there are no LoRA files there"
    )
    raise InvalidRequest(
        f"LoRA {name!r} not found in {folder} (tried {', '.join(p.name for p in tries)}); "
        + hint
        + listing,
        param="prompt",
    )


def lora_tags(prompt: str, folder: Path) -> tuple[str, list[tuple[Path, float]]]:
    """Split the LoRA tags out of a prompt, each resolved to a file in `folder` (or an error)."""
    found = [(find_lora(name, folder), weight) for name, weight in parse_tags(prompt)]
    return strip_tags(prompt), found
