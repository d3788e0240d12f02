"""localimg/engine/batching.py: which queued requests may share one pipeline call (the end-to-end
batch through the diffusers backend is tests/backends/test_diffusers_batching.py)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from PIL import Image

from localimg.engine.batching import AllCancelled, batch_key, take_compatible
from localimg.requests import ImageRequest

BASE = ImageRequest(prompt="a lighthouse", steps=3, width=64, height=64)


def test_batch_keys() -> None:
    assert batch_key(BASE) == batch_key(BASE.with_(prompt="a cat", seed=9, n=3))
    assert batch_key(BASE) != batch_key(BASE.with_(width=128))
    assert batch_key(BASE) != batch_key(BASE.with_(steps=4))
    assert batch_key(BASE) != batch_key(BASE.with_(cfg_scale=2.0))
    assert batch_key(BASE) != batch_key(BASE.with_(prompt="a cat|blurry"))
    assert batch_key(BASE.with_(negative_prompt="x")) == batch_key(BASE.with_(prompt="y|z"))
    assert batch_key(BASE.with_(extra={"eta": 0.5})) is None
    image = Image.new("RGB", (64, 64))
    assert batch_key(BASE.with_(init_image=image)) is None


def test_take_compatible_counts_images() -> None:
    queued = [
        BASE.with_(prompt="b"),
        BASE.with_(width=128),  # different size: stays queued
        BASE.with_(prompt="c", n=3),  # too many images for the room left
        BASE.with_(prompt="d"),
        BASE.with_(prompt="e"),
    ]
    assert take_compatible(BASE, queued, 4) == [0, 3, 4]
    assert take_compatible(BASE, queued, 1) == []
    assert take_compatible(BASE.with_(extra={"eta": 0.1}), queued, 8) == []


def test_all_cancelled() -> None:
    first, second = threading.Event(), threading.Event()
    flag = AllCancelled([first, second])
    first.set()
    assert not flag.is_set()
    second.set()
    assert flag.is_set()


def test_a_model_whose_yaml_turns_its_prompt_enhancer_on_runs_each_request_alone(
    tmp_path: Path,
) -> None:
    """The enhancer samples its rewrite per call: batched, an image would not be the request's
    own (the request's own `prompt_enhance` is an extra, which never batches)."""
    from localimg.config import config_from_dict
    from localimg.engine.batching import enhances_prompts

    def config(*options: str) -> Any:
        data = {"name": "m", "backend": "diffusers", "parameters": {"model": "x"}}
        return config_from_dict(
            {**data, "options": list(options)}, where="m.yaml", models_path=tmp_path
        )

    assert enhances_prompts(config("prompt_enhance:true"))
    assert enhances_prompts(config("use_pe:true"))
    assert not enhances_prompts(config("prompt_enhance:false"))
    assert not enhances_prompts(config())
    assert batch_key(ImageRequest("a fox", extra={"prompt_enhance": True})) is None
