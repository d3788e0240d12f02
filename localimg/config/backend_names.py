"""The names a model YAML's `backend:` may give the two built-in backends: the one table.

LocalAI calls them `diffusers` and `stablediffusion-ggml`; people also write the library's own
names (`stable-diffusion.cpp`, `sd.cpp`, ...). The backend registry (backends/__init__), the
A1111 API's sampler vocabulary (ggml-style or diffusers-style names) and the gallery's "is this an
image model" test all read this table, so a name one of them accepts is accepted by all. It lives
in config/ because the server and the gallery may not import backends/.
"""

from __future__ import annotations

DIFFUSERS = "diffusers"
GGML = "stablediffusion-ggml"
BUILTIN_BACKENDS = (DIFFUSERS, GGML)

BACKEND_ALIASES: dict[str, str] = {
    "huggingface-diffusers": DIFFUSERS,
    "ggml": GGML,
    "stablediffusion-cpp": GGML,
    "stable-diffusion.cpp": GGML,
    "sd.cpp": GGML,
    "sdcpp": GGML,
}


def builtin_backend(name: str) -> str | None:
    """The built-in backend `name` (or one of its aliases) means, or None (a plugin's name or an
    unknown one: the registry decides which)."""
    key = name.strip().lower()
    key = BACKEND_ALIASES.get(key, key)
    return key if key in BUILTIN_BACKENDS else None
