"""`<lora:name:weight>` prompt tags: each resolved to a file inside the model's LoRA folder, and
the prompt the library gets, with every LoRA (the YAML's too) as a tag naming its absolute file."""

from __future__ import annotations

import re
from pathlib import Path

from localimg.backends.ggml.options import GgmlOptions
from localimg.config import ModelConfig
from localimg.errors import InvalidRequest

LORA_SUFFIXES = (".safetensors", ".gguf", ".pt", ".ckpt")
LORA_TAG = re.compile(r"<lora:([^:>]+):([^>]*)>")


def lora_dir(config: ModelConfig, options: GgmlOptions) -> Path:
    if options.lora_dir:
        return config.resolve_path(options.lora_dir)
    return config.resolve_path(".")


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
    known = sorted(p.stem for p in folder.glob("*") if p.suffix in LORA_SUFFIXES and p.is_file())[
        :20
    ]
    raise InvalidRequest(
        f"LoRA {name!r} not found in {folder} (tried {', '.join(p.name for p in tries)}); "
        + (f"LoRA files there: {', '.join(known)}" if known else "there are no LoRA files there"),
        param="prompt",
    )


def lora_tags(prompt: str, folder: Path) -> tuple[str, list[tuple[Path, float]]]:
    """Split `<lora:name:weight>` tags out of a prompt, each resolved to a file (or an error)."""
    found: list[tuple[Path, float]] = []
    for match in LORA_TAG.finditer(prompt):
        name, weight_text = match.group(1).strip(), match.group(2).strip()
        try:
            weight = float(weight_text)
        except ValueError:
            raise InvalidRequest(
                f"LoRA tag {match.group(0)!r}: the weight must be a number, e.g. <lora:{name}:0.8>",
                param="prompt",
            ) from None
        found.append((find_lora(name, folder), weight))
    return LORA_TAG.sub("", prompt).strip(), found


def prompt_with_loras(
    prompt: str, config: ModelConfig, options: GgmlOptions, yaml_loras: list[tuple[Path, float]]
) -> str:
    """The prompt with every LoRA (YAML + tags) as a tag naming its absolute file: the form the
    library parses, whatever folder the file is in."""
    plain, tagged = lora_tags(prompt, lora_dir(config, options))
    tags = []
    for path, weight in [*yaml_loras, *tagged]:
        text = str(path)
        if ":" in text or ">" in text:
            raise InvalidRequest(
                f"LoRA path {text!r} contains ':' or '>', which stable-diffusion-cpp-python "
                "cannot pass on; move the file to a folder without them",
                param="prompt",
            )
        tags.append(f"<lora:{text}:{weight:g}>")
    return " ".join([plain, *tags]).strip()
