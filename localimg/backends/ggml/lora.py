"""`<lora:name:weight>` prompt tags on the ggml engine: the model's LoRA folder, and the prompt
the library gets, with every LoRA (the YAML's too) as a tag naming its absolute file. The tags'
syntax and file lookup are shared with the diffusers engine (localimg/prompts/lora_tags.py)."""

from __future__ import annotations

from pathlib import Path

from localimg.backends.ggml.options import GgmlOptions
from localimg.config import ModelConfig
from localimg.errors import InvalidRequest
from localimg.prompts.lora_tags import lora_tags


def lora_dir(config: ModelConfig, options: GgmlOptions) -> Path:
    """The model's `lora_dir` option, else the models dir itself (the ggml engine's default)."""
    if options.lora_dir:
        return config.resolve_path(options.lora_dir)
    return config.resolve_path(".")


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
