"""The family table: the rows of the families of 2025 (here) and of 2026 (one module per family
group beside this one), by the diffusers class names that load them."""

from __future__ import annotations

from localimg.backends.diffusers.families import (
    anima,
    ernie_image,
    krea_ideogram,
    ltx2,
    qwen_image_2026,
    z_image_omni,
)
from localimg.backends.diffusers.families.family import Family

Z_IMAGE = Family(
    "Z-Image",
    cfg_on=0.0,
    img2img="ZImageImg2ImgPipeline",
    inpaint="ZImageInpaintPipeline",
    adjust=z_image_omni.adjust_z_image,  # cfg_normalization / cfg_truncation checked
)
# Reference limits from BFL's docs (diffusers has none): FLUX.2 up to 10 (6 recommended for
# [dev]), klein up to 4.
FLUX2 = Family("FLUX.2", negative=False, references=10, min_reference_side=64)
FLUX2_KLEIN = Family("FLUX.2-klein", negative=False, references=4, min_reference_side=64)
QWEN_IMAGE = Family(
    "Qwen-Image",
    cfg_kwarg="true_cfg_scale",
    blank_negative=True,
    distilled_kwarg="guidance_scale",
    max_sequence_length=1024,
    img2img="QwenImageImg2ImgPipeline",
    inpaint="QwenImageInpaintPipeline",
)
QWEN_IMAGE_EDIT_PLUS = Family(
    "Qwen-Image-Edit-Plus",
    truncates_prompt=False,
    cfg_kwarg="true_cfg_scale",
    blank_negative=True,
    distilled_kwarg="guidance_scale",
    references=3,
    needs_image=True,
    max_sequence_length=1024,
)
QWEN_IMAGE_EDIT = Family(  # the first Qwen-Image-Edit: one input image
    "Qwen-Image-Edit",
    truncates_prompt=False,
    cfg_kwarg="true_cfg_scale",
    blank_negative=True,
    distilled_kwarg="guidance_scale",
    references=1,
    needs_image=True,
    max_sequence_length=1024,
)
KONTEXT = Family(
    "FLUX.1 Kontext",
    cfg_kwarg="true_cfg_scale",
    blank_negative=True,
    distilled_kwarg="guidance_scale",
    references=1,
    max_sequence_length=512,
    area_kwarg=True,
    default_cfg=1.0,
)
# ChromaInpaintPipeline (diffusers 0.42) reads transformer.config.guidance_embeds, which Chroma's
# transformer does not have, and fails: no inpainting for Chroma until diffusers fixes it.
CHROMA = Family("Chroma", max_sequence_length=512, img2img="ChromaImg2ImgPipeline")
WAN = Family("Wan", default_size=(832, 480), video=True, img2vid="WanImageToVideoPipeline")

FAMILIES: dict[str, Family] = {
    "ZImagePipeline": Z_IMAGE,
    "ZImageImg2ImgPipeline": Z_IMAGE,
    "ZImageInpaintPipeline": Z_IMAGE,
    "Flux2Pipeline": FLUX2,
    "Flux2KleinPipeline": FLUX2_KLEIN,
    "QwenImagePipeline": QWEN_IMAGE,
    "QwenImageImg2ImgPipeline": QWEN_IMAGE,
    "QwenImageInpaintPipeline": QWEN_IMAGE,
    "QwenImageEditPlusPipeline": QWEN_IMAGE_EDIT_PLUS,
    "QwenImageEditPipeline": QWEN_IMAGE_EDIT,
    "FluxKontextPipeline": KONTEXT,
    "ChromaPipeline": CHROMA,
    "ChromaImg2ImgPipeline": CHROMA,
    "WanPipeline": WAN,
    "WanImageToVideoPipeline": WAN,
    # the ControlNet pipelines of these families (control.py) read requests the same way
    "ZImageControlNetPipeline": Z_IMAGE,
    "ZImageControlNetInpaintPipeline": Z_IMAGE,
    "QwenImageControlNetPipeline": QWEN_IMAGE,
    # the families of 2026
    **krea_ideogram.ROWS,
    **ernie_image.ROWS,
    **qwen_image_2026.ROWS,
    **z_image_omni.ROWS,
    **anima.ROWS,
    **ltx2.ROWS,
}
