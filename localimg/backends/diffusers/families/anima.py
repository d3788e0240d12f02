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
- no reference edits, masks or prompt enhancer. The blocks do img2img (`image`, `strength`), but
  only as the same pipeline with an image input, which localimg's task choice has no sibling for:
  an input image is refused (by the generic task choice) rather than used half-way.
"""

from __future__ import annotations

from localimg.backends.diffusers.families.family import Family

ANIMA = Family("Anima", cfg_on=1.0, max_sequence_length=4096)

ROWS: dict[str, Family] = {"AnimaModularPipeline": ANIMA}
