"""diffusers and transformers as localimg drives them: the dtype keyword each version takes, their
progress bars and import-time warnings silenced, and transformers 5's CLIP layout bridged.

Each of these is a difference between library versions or a library habit (drawing its own
bars, warning about parts localimg never uses), kept here so the loading code reads as loading.
"""

from __future__ import annotations

from typing import Any


def dtype_key() -> str:
    """diffusers renamed `torch_dtype` to `dtype` (and warns on the old name); use what it takes."""
    from diffusers.utils import deprecation_utils

    return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"


# Warnings that importing diffusers prints once torchao (quantization:int8) is installed, about
# parts localimg never uses: torchao's CUDA kernels missing on a CPU build, tensor classes of
# torchao-serialized checkpoints, and torch's notice about an enum torchao registers.
IMPORT_NOISE_LOGGERS = (
    "torchao",
    "diffusers.quantizers.torchao.torchao_quantizer",
    "torch.utils._pytree",
)


def quiet_library_progress() -> None:
    """diffusers/transformers draw their own tqdm bars while loading; localimg shows its own.
    Also silences import-time warnings that say nothing about the user's model (before the
    first diffusers import, which is what prints them)."""
    import logging

    for name in IMPORT_NOISE_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()
    try:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    except ImportError:
        pass


def bridge_clip_text_model(pipe: Any) -> None:
    """Let diffusers' clip_skip code find `text_encoder.text_model` under transformers 5.

    transformers 5 flattened CLIPTextModel (final_layer_norm moved up a level) while diffusers'
    encode_prompt still reads `text_encoder.text_model.final_layer_norm` when clip_skip is set.
    The alias is stored outside torch's module registry, so weights are not duplicated.
    """
    for name in ("text_encoder", "text_encoder_2"):
        encoder = getattr(pipe, name, None)
        if encoder is None or "text_model" in vars(encoder) or hasattr(encoder, "text_model"):
            continue
        if hasattr(encoder, "final_layer_norm"):
            object.__setattr__(encoder, "text_model", encoder)
