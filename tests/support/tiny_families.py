"""Tiny random-weight pipelines of today's diffusers model families, built offline for tests.

Each builder makes the family's real pipeline class with its real component classes at toy sizes
(a few MB, 2 steps at 32x32 in about a second on a CPU), saves it with `save_pretrained` under
the test cache and returns the folder, which `DiffusionPipeline.from_pretrained(folder)` reloads
(that is how localimg loads models). The shapes follow diffusers' own fast tests
(`tests/pipelines/<family>/test_*.py`, `get_dummy_components`); the tokenizers, which those tests
fetch from the hub, are written here: a byte-level BPE (one token per byte, no merges) plus the
family's special tokens and, for Qwen ones, a Qwen-style chat template.

Facts per family (diffusers 0.42; "multiple" = height and width must be multiples of it here;
"mu" = the pipeline passes `mu` to `scheduler.set_timesteps`, which only uses it when the
scheduler config has `use_dynamic_shifting: true`). Also in /tmp/families-facts.md.

ZImagePipeline: multiple 4 (tiny) / 16 (real; vae_scale_factor*2). negative_prompt: yes (used when
  guidance_scale > 0). guidance_scale: true CFG (Turbo runs at 0). max_sequence_length 512.
  FlowMatchEuler; passes mu (real Turbo config: static shift 3, so mu is ignored). Own sigmas.
Flux2KleinPipeline: multiple 4 / 16. No negative_prompt kwarg (CFG's negative is ""; only
  negative_prompt_embeds). guidance_scale: true CFG when > 1 and not `is_distilled` (the 4B/9B
  klein are distilled: ignored with a warning; `tiny_flux2_klein_base_path` is not). 512.
  FlowMatchEuler with dynamic shifting; passes mu (compute_empirical_mu). References: image=[...]
  (no count limit in the pipeline), each >= 64 px a side, aspect <= 8, cropped to the multiple.
Flux2Pipeline: multiple 4 / 16. No negative_prompt (no CFG at all). guidance_scale: distilled
  guidance (embedded, default 4.0). 512 (and a long system message before the prompt). Scheduler
  and references as klein. Its `tokenizer` is a plain tokenizer here: the real PixtralProcessor
  needs torchvision in transformers 5 (see mistral_tokenizer).
ChromaPipeline: multiple 4 / 16. negative_prompt: yes. guidance_scale: true CFG when > 1.
  512 (T5). FlowMatchEuler with dynamic shifting; passes mu (calculate_shift).
FluxKontextPipeline: multiple 16 / 16 (a 4-level tiny VAE). negative_prompt: yes, with
  true_cfg_scale > 1 (true CFG); guidance_scale: distilled guidance. 512 (T5; CLIP 77). Dynamic
  shifting, mu passed. The output is rescaled to `max_area` (default 1024**2) at the requested
  aspect ratio; the input image goes to the nearest Kontext resolution unless
  `_auto_resize=False`. One image only (two fail inside the pipeline with a RuntimeError).
QwenImagePipeline: multiple 16 / 16. negative_prompt: yes, with true_cfg_scale > 1 (default 4.0;
  a warning if one is given without the other). guidance_scale: only for guidance-distilled
  transformers (none released; ignored with a warning). 512. Dynamic shifting (exponential),
  mu passed. A byte-level tokenizer makes the template longer than the 34 tokens it drops.
QwenImageEditPlusPipeline: multiple 32 here (scale-16 tiny VAE) / 16 real. Needs >= 1 image
  (`image=[...]`; None fails); each is encoded at ~1 MP and given to the VL encoder at ~384x384;
  the output defaults to the last image's aspect at ~1 MP. CFG as QwenImagePipeline. Its
  Qwen2VLProcessor needs torchvision in transformers 5: without it, it can neither be built nor
  loaded (nor can the real Qwen-Image-Edit repositories), so its tests skip.
WanPipeline (Wan 2.1 T2V): multiple 16 (ValueError otherwise), num_frames 4k+1 (else rounded
  with a warning). negative_prompt: yes. guidance_scale: true CFG when > 1 (guidance_scale_2
  only with boundary_ratio, Wan 2.2 A14B's second expert). 512 (UMT5). UniPCMultistepScheduler
  on flow sigmas (flow_shift 3), no mu. Output `.frames`: np (1, F, H, W, 3) in [0, 1].
WanImageToVideoPipeline (Wan 2.2 TI2V-5B style: expand_timesteps, no CLIP image encoder):
  `image=` one PIL image (required), multiple 32 (16 checked, then rounded down to the VAE's 16
  x patch 2 with a warning), rest as WanPipeline. Needs ftfy (an unguarded call in diffusers).
  `tiny_wan22_ti2v_path` saves the same model as a WanPipeline (expand_timesteps), the shape of
  the TI2V-5B repository as far as I know; WanImageToVideoPipeline.from_pretrained loads it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.tiny_families_flux import (
    tiny_chroma_path,
    tiny_flux2_klein_base_path,
    tiny_flux2_klein_path,
    tiny_flux2_path,
    tiny_flux_kontext_path,
)
from tests.support.tiny_families_qwen_wan import (
    tiny_qwen_image_edit_plus_path,
    tiny_qwen_image_path,
    tiny_wan22_ti2v_path,
    tiny_wan_i2v_path,
    tiny_wan_path,
)
from tests.support.tiny_family_parts import (
    family_folder,
    qwen3_config,
    qwen_tokenizer,
    save_pipeline,
)

__all__ = [
    "FAMILY_BUILDERS",
    "TINY_FAMILIES",
    "TinyFamily",
    "small_edit_plus_references",
    "tiny_chroma_path",
    "tiny_flux2_klein_base_path",
    "tiny_flux2_klein_path",
    "tiny_flux2_path",
    "tiny_flux_kontext_path",
    "tiny_qwen_image_edit_plus_path",
    "tiny_qwen_image_path",
    "tiny_wan22_ti2v_path",
    "tiny_wan_i2v_path",
    "tiny_wan_path",
    "tiny_z_image_path",
]


# --- Z-Image ------------------------------------------------------------------------------------


def make_z_image() -> Any:
    import torch
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        ZImagePipeline,
        ZImageTransformer2DModel,
    )
    from transformers import Qwen3Model

    torch.manual_seed(0)
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=16,
        dim=32,
        n_layers=2,
        n_refiner_layers=1,
        n_heads=2,
        n_kv_heads=2,
        norm_eps=1e-5,
        qk_norm=True,
        cap_feat_dim=16,
        rope_theta=256.0,
        t_scale=1000.0,
        axes_dims=[8, 4, 4],
        axes_lens=[256, 32, 32],
    )
    with torch.no_grad():  # made with torch.empty: fix them so no NaN sneaks in
        for name in ("x_pad_token", "cap_pad_token"):  # not in diffusers' type hints
            token = getattr(transformer, name)
            token.copy_(torch.ones_like(token))
    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        block_out_channels=[32, 64],
        layers_per_block=1,
        latent_channels=16,
        norm_num_groups=32,
        sample_size=32,
        scaling_factor=0.3611,
        shift_factor=0.1159,
    )
    torch.manual_seed(0)
    text_encoder = Qwen3Model(qwen3_config(hidden=16, layers=2))
    # Z-Image-Turbo's own scheduler config: a static shift of 3.
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=False)
    return ZImagePipeline(
        transformer=transformer,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=qwen_tokenizer(),
        scheduler=scheduler,
    )


def tiny_z_image_path() -> Path:
    """A tiny ZImagePipeline (Z-Image / Z-Image-Turbo): sizes in multiples of 4."""
    return save_pipeline(family_folder("z-image"), make_z_image)


FAMILY_BUILDERS: dict[str, Callable[[], Path]] = {
    "ZImagePipeline": tiny_z_image_path,
    "Flux2KleinPipeline": tiny_flux2_klein_path,
    "Flux2Pipeline": tiny_flux2_path,
    "ChromaPipeline": tiny_chroma_path,
    "FluxKontextPipeline": tiny_flux_kontext_path,
    "QwenImagePipeline": tiny_qwen_image_path,
    "QwenImageEditPlusPipeline": tiny_qwen_image_edit_plus_path,
    "WanPipeline": tiny_wan_path,
    "WanImageToVideoPipeline": tiny_wan_i2v_path,
}


# The tiny pipelines by the short name the `tiny_family` fixture takes (tests/conftest.py): the
# families above plus the variants no pipeline class names on its own.
TINY_FAMILIES: dict[str, Callable[[], Path]] = {
    "z_image": tiny_z_image_path,
    "flux2_klein": tiny_flux2_klein_path,
    "flux2_klein_base": tiny_flux2_klein_base_path,
    "flux2": tiny_flux2_path,
    "chroma": tiny_chroma_path,
    "flux_kontext": tiny_flux_kontext_path,
    "qwen_image": tiny_qwen_image_path,
    "qwen_image_edit_plus": tiny_qwen_image_edit_plus_path,
    "wan": tiny_wan_path,
    "wan_i2v": tiny_wan_i2v_path,
    "wan22_ti2v": tiny_wan22_ti2v_path,
}

TinyFamily = Callable[[str], Path]  # the `tiny_family` fixture: short name → cached folder


@contextmanager
def small_edit_plus_references(side: int = 128) -> Iterator[None]:
    """QwenImageEditPlusPipeline encodes each reference image at its model's working size, about
    1 MP (the module constant VAE_IMAGE_SIZE), whatever the output size: on the tiny pipeline that
    is most of every edit's time. Tests whose assertions do not depend on it (references change
    the image, parity with the bare call, refusals) run with `side` x `side` instead; both the
    backend and a bare pipeline call read the same constant, so they stay comparable."""
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as module

    saved = module.VAE_IMAGE_SIZE
    module.VAE_IMAGE_SIZE = side * side
    try:
        yield
    finally:
        module.VAE_IMAGE_SIZE = saved
