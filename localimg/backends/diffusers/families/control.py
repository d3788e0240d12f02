"""How each family runs ControlNets (pipeline/controlnet.py builds them from these rows)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ControlFamily:
    """How a family runs ControlNets: its ControlNet model classes, the pipelines per task
    (diffusers' classes, built with from_pipe over the loaded pipeline), how several units stack
    (`multi`: the class that wraps a list; None: one unit) and whether the pipeline takes
    control_guidance_start/end. `matches` are the config keys a ControlNet shares with the
    family's denoiser (a ControlNet of another family or size differs in one of them)."""

    name: str
    models: tuple[str, ...]
    txt2img: str
    img2img: str | None
    inpaint: str | None
    multi: str | None
    window: bool = True
    matches: tuple[str, ...] = ()


_SD_KEYS = ("cross_attention_dim", "addition_embed_type")
_SD = "StableDiffusion"
SD_CONTROL = ControlFamily(
    "SD 1.x/2.x", ("ControlNetModel",), f"{_SD}ControlNetPipeline",
    f"{_SD}ControlNetImg2ImgPipeline", f"{_SD}ControlNetInpaintPipeline",
    "MultiControlNetModel", matches=_SD_KEYS,
)  # fmt: skip
SDXL_CONTROL = ControlFamily(
    "SDXL", ("ControlNetModel",), f"{_SD}XLControlNetPipeline",
    f"{_SD}XLControlNetImg2ImgPipeline", f"{_SD}XLControlNetInpaintPipeline",
    "MultiControlNetModel", matches=_SD_KEYS,
)  # fmt: skip
SDXL_UNION_CONTROL = ControlFamily(  # ControlNet++ (xinsir's union): one net, several modes
    "SDXL", ("ControlNetUnionModel",), f"{_SD}XLControlNetUnionPipeline",
    f"{_SD}XLControlNetUnionImg2ImgPipeline", f"{_SD}XLControlNetUnionInpaintPipeline",
    None, matches=_SD_KEYS,
)  # fmt: skip
_DIT_KEYS = ("joint_attention_dim", "num_attention_heads", "attention_head_dim")
FLUX1_CONTROL = ControlFamily(
    "FLUX.1", ("FluxControlNetModel",), "FluxControlNetPipeline",
    "FluxControlNetImg2ImgPipeline", "FluxControlNetInpaintPipeline",
    "FluxMultiControlNetModel", matches=(*_DIT_KEYS, "pooled_projection_dim", "in_channels"),
)  # fmt: skip
Z_IMAGE_CONTROL = ControlFamily(
    "Z-Image", ("ZImageControlNetModel",), "ZImageControlNetPipeline", None,
    "ZImageControlNetInpaintPipeline", None, window=False, matches=("dim", "n_heads"),
)  # fmt: skip
# Its ControlNet inpaint pipeline takes no image (not used); QwenImageMultiControlNetModel
# (diffusers 0.42) takes a single union ControlNet only: one unit.
QWEN_IMAGE_CONTROL = ControlFamily(
    "Qwen-Image", ("QwenImageControlNetModel",), "QwenImageControlNetPipeline", None, None,
    None, matches=_DIT_KEYS,
)  # fmt: skip

# The loaded pipeline's class → its family's ControlNet rules (SDXL's union ControlNets: the
# union row, chosen by the ControlNet's class).
CONTROLNETS: dict[str, ControlFamily] = {
    **dict.fromkeys((f"{_SD}Pipeline", f"{_SD}Img2ImgPipeline", f"{_SD}InpaintPipeline"),
                    SD_CONTROL),
    **dict.fromkeys((f"{_SD}XLPipeline", f"{_SD}XLImg2ImgPipeline", f"{_SD}XLInpaintPipeline"),
                    SDXL_CONTROL),
    **dict.fromkeys(("FluxPipeline", "FluxImg2ImgPipeline", "FluxInpaintPipeline"),
                    FLUX1_CONTROL),
    **dict.fromkeys(("ZImagePipeline", "ZImageImg2ImgPipeline", "ZImageInpaintPipeline"),
                    Z_IMAGE_CONTROL),
    **dict.fromkeys(("QwenImagePipeline", "QwenImageImg2ImgPipeline", "QwenImageInpaintPipeline"),
                    QWEN_IMAGE_CONTROL),
}  # fmt: skip
CONTROL_FAMILIES = "SD 1.x/2.x, SDXL, FLUX.1, Z-Image and Qwen-Image"
