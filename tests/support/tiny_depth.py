"""A tiny random Depth Anything model with its image processor, saved as a local folder.

What the depth preprocessor loads in tests instead of Depth Anything V2 Small: the same classes
(a DINOv2 backbone, the DPT-style neck and head) at a few thousand weights, so
`pipeline("depth-estimation", model=folder)` runs offline in well under a second per image.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from tests.support.tiny_models import build_lock, cache_dir

VERSION = "1"


def build_tiny_depth(folder: Path) -> Path:
    import torch
    from transformers import (
        DepthAnythingConfig,
        DepthAnythingForDepthEstimation,
        Dinov2Config,
        DPTImageProcessor,
    )

    shape: dict[str, Any] = {  # a dict: the backbone keywords are not in the stubs' signature
        "image_size": 28,
        "patch_size": 14,
        "hidden_size": 16,
        "num_hidden_layers": 4,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "out_features": ["stage1", "stage2", "stage3", "stage4"],
        "reshape_hidden_states": False,
    }
    backbone = Dinov2Config(**shape)
    config = DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=16,
        patch_size=14,
        neck_hidden_sizes=[8, 8, 8, 8],
        fusion_hidden_size=8,
        head_hidden_size=8,
        depth_estimation_type="relative",
    )
    torch.manual_seed(0)
    model = DepthAnythingForDepthEstimation(config).eval()
    processor = DPTImageProcessor(
        do_resize=True,
        size={"height": 56, "width": 56},
        keep_aspect_ratio=True,
        ensure_multiple_of=14,
        do_pad=False,
    )
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def tiny_depth_path() -> Path:
    """The cached tiny depth model folder, built on first use."""
    folder = cache_dir() / f"tiny-depth-v{VERSION}"
    with build_lock():
        if not (folder / "preprocessor_config.json").is_file():
            build_tiny_depth(folder)
    return folder
