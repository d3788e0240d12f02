"""A tiny ERNIE-Image pipeline (ErnieImagePipeline), with and without its prompt enhancer.

The real components at toy sizes: ErnieImageTransformer2DModel, the FLUX.2-style
AutoencoderKLFlux2, a Mistral3Model text encoder, and the prompt enhancer `pe`, a
Ministral3ForCausalLM with its own tokenizer (`pe_tokenizer`). Both tokenizers are the byte-level
Mistral-style tokenizer of tests/support/tiny_family_parts.py (chat template included: the
enhancer applies it).

Facts (diffusers 0.42): sizes in multiples of the pipeline's vae_scale_factor, which is
2 ** len(vae block_out_channels) and so already counts the 2x2 latent patches: 16 here and on the
real model (a 4-level VAE); other sizes are refused with a ValueError.
guidance_scale is true CFG when above 1 (default 4.0; ERNIE-Image-Turbo runs at 1.0 in 8 steps);
negative_prompt (default "") is read only then. No max_sequence_length: the tokenizer cuts at its
model_max_length. The scheduler is called with sigmas linspace(1, 1/n, n) and no `mu`.
`use_pe` defaults to True and runs the enhancer when `pe` and `pe_tokenizer` are loaded: it samples
a rewrite (temperature 0.6, top_p 0.95) with torch's global generator, not the call's `generator`,
of at most pe_tokenizer.model_max_length new tokens (8 here), from a JSON of the prompt, width
and height. The transformer's last projections start at zero (diffusers' init): they are drawn
here, or the prompt would not change the image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.tiny_family_parts import (
    MISTRAL_VOCAB,
    family_folder,
    mistral3_encoder,
    mistral_tokenizer,
    save_pipeline,
)

TEXT_HIDDEN = 16
LATENT_CHANNELS = 4
PE_NEW_TOKENS = 8  # the enhancer writes at most this many tokens (pe_tokenizer.model_max_length)


def ernie_transformer() -> Any:
    import torch
    from diffusers import ErnieImageTransformer2DModel

    torch.manual_seed(0)
    transformer: Any = ErnieImageTransformer2DModel(  # ConfigMixin hides its nn.Module side
        hidden_size=32,
        num_attention_heads=2,
        num_layers=2,
        ffn_hidden_size=48,
        in_channels=LATENT_CHANNELS * 4,  # the latents are patchified 2x2 before the transformer
        out_channels=LATENT_CHANNELS * 4,
        patch_size=1,
        text_in_dim=TEXT_HIDDEN,
        rope_theta=256,
        rope_axes_dim=(4, 6, 6),  # sums to the head size, 16
    )
    with torch.no_grad():  # zero-initialised: the blocks and the output would ignore the text
        for name, param in transformer.named_parameters():
            if name.startswith(("adaLN_modulation.", "final_linear.")):
                torch.nn.init.normal_(param, std=0.2)
    return transformer


def ernie_vae() -> Any:
    """AutoencoderKLFlux2 with four levels, as the real one: latents at 1/8, patchified to 1/16
    (vae_scale_factor 16), so sizes in multiples of 16 and not of 32 can be tried."""
    import torch
    from diffusers import AutoencoderKLFlux2

    torch.manual_seed(0)
    return AutoencoderKLFlux2(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(4, 8, 8, 8),
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def prompt_enhancer() -> Any:
    """Ministral3ForCausalLM at toy size over the Mistral-style tokenizer's ids."""
    import torch
    from transformers import Ministral3Config, Ministral3ForCausalLM

    torch.manual_seed(0)
    config = Ministral3Config(
        vocab_size=MISTRAL_VOCAB,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        bos_token_id=2,
        eos_token_id=3,
        pad_token_id=4,
    )  # the default YaRN rope and positions, as the real one (its attention scaling reads them)
    return Ministral3ForCausalLM(config).eval()


def make_ernie_image(with_pe: bool) -> Any:
    import torch
    from diffusers import ErnieImagePipeline, FlowMatchEulerDiscreteScheduler

    transformer = ernie_transformer()
    vae = ernie_vae()
    torch.manual_seed(0)
    text_encoder = mistral3_encoder(hidden=TEXT_HIDDEN, layers=2).model  # a Mistral3Model
    pe = pe_tokenizer = None
    if with_pe:
        pe = prompt_enhancer()
        pe_tokenizer = mistral_tokenizer()
        pe_tokenizer.model_max_length = PE_NEW_TOKENS
    return ErnieImagePipeline(
        transformer=transformer,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=mistral_tokenizer(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),  # a static shift: no mu is passed
        pe=pe,
        pe_tokenizer=pe_tokenizer,
    )


def tiny_ernie_image_path() -> Path:
    """A tiny ErnieImagePipeline with its prompt enhancer (pe, pe_tokenizer)."""
    return save_pipeline(family_folder("ernie-image"), lambda: make_ernie_image(True))


def tiny_ernie_image_no_pe_path() -> Path:
    """The same weights without the prompt enhancer: `pe` and `pe_tokenizer` are null in its
    model_index.json, as in a folder saved without them."""
    return save_pipeline(family_folder("ernie-image-no-pe"), lambda: make_ernie_image(False))
