"""The row of Anima (a diffusers modular pipeline).

Anima is a Cosmos-Predict2 DiT (CosmosTransformer3DModel) read through an LLM adapter
(AnimaTextConditioner: Qwen3 hidden states cross-attended by T5 token ids) over the Qwen-Image VAE.
diffusers 0.42 has it only as a modular pipeline, AnimaModularPipeline over AnimaAutoBlocks;
load/modular.py loads it and pipeline/modular.py gives it a classic call (`guidance_scale`,
`callback_on_step_end`), so this row reads it like any other family:

- guidance is classifier-free guidance by ClassifierFreeGuidance (default 4.0): it runs at any
  scale but 1, so guidance (and a negative prompt) acts above 1; at 1 the negative prompt is not
  even encoded, so one given then is refused;
- the prompt is cut at `max_sequence_length` tokens (default 512), which the text encoder step
  refuses above 4096;
- sizes are multiples of the VAE's factor x 2 (16): the blocks refuse others; the default is the
  pipeline's 128 x 8 = 1024 pixels a side;
- an input image is img2img (`strength`: the request's or YAML's, else the blocks' 0.9): the
  same blocks take it, through the adapter's img2img sibling; no masks (the blocks have no
  inpainting), no reference edits, no prompt enhancer;
- the latent hires fix is refused (its latents are 5-D video-style latents of the Qwen-Image VAE,
  not an image the latent upscalers resize); a pixel upscaler's hires fix runs.
"""

from __future__ import annotations

from localimg.backends.diffusers.families.family import Family

ANIMA = Family("Anima", cfg_on=1.0, max_sequence_length=4096)

ROWS: dict[str, Family] = {"AnimaModularPipeline": ANIMA}
