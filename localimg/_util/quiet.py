"""Which library warnings localimg's users never see, named one by one.

The libraries under the backends warn about their own internals (torch and torchao about CUDA
kernels a CPU build lacks, transformers and diffusers about their own deprecated paths). Those are
not for a person making an image, so the CLI and the worker processes hide them. They hide only
warnings raised from inside those libraries: a DeprecationWarning or FutureWarning that points at
localimg's own code (diffusers' `deprecate()` points at its caller) still shows, so a deprecation
in our own use of a library is seen before it breaks.
"""

from __future__ import annotations

import warnings

# Warnings attributed to these packages' own modules are their business, not the user's.
LIBRARIES = (
    "torch",
    "torchao",
    "diffusers",
    "transformers",
    "huggingface_hub",
    "accelerate",
    "peft",
    "safetensors",
    "tokenizers",
    "gguf",
    "stable_diffusion_cpp",
)
_MODULES = rf"({'|'.join(LIBRARIES)})(\..*)?$"


def quiet_library_warnings() -> None:
    """Hide the deprecation and future warnings the libraries raise about themselves."""
    for category in (DeprecationWarning, FutureWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=_MODULES)
