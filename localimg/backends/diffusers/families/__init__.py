"""The model families of 2025-26 (Z-Image, FLUX.2, Qwen-Image, FLUX.1 Kontext, Chroma, Wan, and
the families of 2026 in one module per group): one row per family saying how a request maps onto
its pipeline, read from each pipeline's code (diffusers 0.42).

The generic request mapping (pipeline/call_args.py) was written for Stable Diffusion: `cfg_scale` is
`guidance_scale`, a negative prompt is always welcome, an image means img2img. These families
differ, and a difference handled wrongly is a parameter silently ignored, so each row says:

- which keyword really does guidance (`cfg_kwarg`) and above which value guidance runs;
- whether there is a negative prompt, and whether true CFG needs one (Qwen-Image and Kontext run
  CFG only when one is given: with none, localimg passes " ", as diffusers' docs do);
- which keyword takes the distilled guidance (the `guidance` option), where a family has one
  besides true CFG; it only acts when the transformer embeds guidance (`guidance_embeds`);
- how many input images a reference edit takes (0: none; an image then means img2img through the
  family's own img2img pipeline, if it has one);
- the limit the pipeline puts on `max_sequence_length`;
- the model's own prompt enhancer, where it has one (the `prompt_enhance` option);
- a family's own quirks (`adjust`), the last word on the call's keywords.

family.py is the row, table.py the table, rules.py what a row implies for a request, control.py
the ControlNet rows.
"""

from localimg.backends.diffusers.families.control import (
    CONTROL_FAMILIES,
    CONTROLNETS,
    FLUX1_CONTROL,
    QWEN_IMAGE_CONTROL,
    SD_CONTROL,
    SDXL_CONTROL,
    SDXL_UNION_CONTROL,
    Z_IMAGE_CONTROL,
    ControlFamily,
)
from localimg.backends.diffusers.families.family import EDIT_FAMILIES, Family
from localimg.backends.diffusers.families.rules import (
    BFLOAT16_CLASS_PREFIXES,
    NEEDS,
    check_frames,
    check_needs,
    check_references,
    choose_mode,
    default_cfg,
    family_kwargs,
    family_of,
    is_step_distilled,
    published_in_bfloat16,
    refuse_references,
    size_multiple,
    video_from_image,
)
from localimg.backends.diffusers.families.table import (
    CHROMA,
    FAMILIES,
    FLUX2,
    FLUX2_KLEIN,
    KONTEXT,
    QWEN_IMAGE,
    QWEN_IMAGE_EDIT,
    QWEN_IMAGE_EDIT_PLUS,
    WAN,
    Z_IMAGE,
)

__all__ = [
    "BFLOAT16_CLASS_PREFIXES",
    "CHROMA",
    "CONTROLNETS",
    "CONTROL_FAMILIES",
    "EDIT_FAMILIES",
    "FAMILIES",
    "FLUX1_CONTROL",
    "FLUX2",
    "FLUX2_KLEIN",
    "KONTEXT",
    "NEEDS",
    "QWEN_IMAGE",
    "QWEN_IMAGE_CONTROL",
    "QWEN_IMAGE_EDIT",
    "QWEN_IMAGE_EDIT_PLUS",
    "SDXL_CONTROL",
    "SDXL_UNION_CONTROL",
    "SD_CONTROL",
    "WAN",
    "Z_IMAGE",
    "Z_IMAGE_CONTROL",
    "ControlFamily",
    "Family",
    "check_frames",
    "check_needs",
    "check_references",
    "choose_mode",
    "default_cfg",
    "family_kwargs",
    "family_of",
    "is_step_distilled",
    "published_in_bfloat16",
    "refuse_references",
    "size_multiple",
    "video_from_image",
]
