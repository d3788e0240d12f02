"""A1111 prompt weights and long prompts on Stable Diffusion 1.x/2.x, SDXL, SD3 and FLUX.1,
via compel.

The prompt is parsed by localimg.prompts.a1111; each BREAK chunk is encoded by compel (weights
applied, text past 75 tokens split into further 77-token windows) and the chunks are
concatenated along the token axis, A1111's way. The pipeline then gets `prompt_embeds` and
`negative_prompt_embeds` (and the pooled pair) padded to the same length. SD3 weights its two
CLIP encoders; its T5 reads the plain words (diffusers' own T5 states follow the CLIP ones). A
prompt with no syntax that fits the text encoder's window never comes here: it takes diffusers'
own path. FLUX.1 (and Kontext, Fill) weights its T5 states (compel's blend towards the empty
prompt, as on CLIP); its CLIP reads the plain words for the pooled vector, as A1111 and ComfyUI
do for every pooled vector (SDXL's too). BREAK only separates words there, as T5 reads one
window of up to 512 tokens.

Other families (LLM text encoders or a lone T5: Chroma, Z-Image, Qwen-Image, FLUX.2, Wan, ...)
do not weight: `strip_syntax` keeps the words and drops the syntax, and the result names
"prompt-weights" as ignored. torch and compel are imported only when a prompt is encoded.
"""

from __future__ import annotations

from typing import Any

from localimg.errors import InvalidRequest
from localimg.prompts import a1111

NOTE = "prompt-weights"  # what X-Localimg-Ignored / the CLI name when the syntax was dropped
EMBED_KEYS = (
    "prompt_embeds",
    "negative_prompt_embeds",
    "pooled_prompt_embeds",
    "negative_pooled_prompt_embeds",
)


def kind_of(pipe: Any, params: dict[str, Any]) -> str | None:
    """The compel path that weights this pipeline's prompts ("sd", "sdxl", "sd3", "flux"), or
    None."""
    name = type(pipe).__name__
    if "prompt_embeds" not in params or "negative_prompt_embeds" not in params:
        return None
    if name.startswith("Flux") and "pooled_prompt_embeds" in params:
        both = getattr(pipe, "text_encoder_2", None) is not None
        return "flux" if both and getattr(pipe, "text_encoder", None) is not None else None
    if getattr(pipe, "tokenizer", None) is None or getattr(pipe, "text_encoder", None) is None:
        return None
    both = getattr(pipe, "text_encoder_2", None) is not None
    if name.startswith(("StableDiffusionXL", "StableDiffusion3")):
        kind = "sdxl" if name.startswith("StableDiffusionXL") else "sd3"
        return kind if both and "pooled_prompt_embeds" in params else None
    if name.startswith("StableDiffusion") and not name.startswith("StableDiffusion3"):
        return "sd"
    return None


def needs_encoding(pipe: Any, prompts: list[str | None]) -> bool:
    """Some prompt uses the syntax or is longer than the text encoder's window."""
    tokenizer = pipe.tokenizer
    for prompt in prompts:
        if not prompt:
            continue
        if a1111.has_syntax(prompt):
            return True
        if len(tokenizer(prompt).input_ids) > tokenizer.model_max_length:
            return True
    return False


def strip_syntax(prompt: str | None) -> str | None:
    """The prompt's words without the syntax (for an engine that cannot weight)."""
    if prompt is None or not a1111.has_syntax(prompt):
        return prompt
    return a1111.plain_text(prompt)


def _inversions(pipe: Any, tokenizer: Any) -> Any:
    """Textual-inversion tokens spread to their vectors (`emb` -> `emb emb_1 ...`), as diffusers'
    own encoding does; None where the tokenizer holds no added tokens."""
    from compel import BaseTextualInversionManager

    if not hasattr(pipe, "maybe_convert_prompt") or len(tokenizer) <= tokenizer.vocab_size:
        return None

    class Expander(BaseTextualInversionManager):
        def expand_textual_inversion_token_ids_if_necessary(self, ids: list[int]) -> list[int]:
            if not ids:
                return ids
            text = pipe.maybe_convert_prompt(tokenizer.decode(ids), tokenizer)
            return list(tokenizer.encode(text, add_special_tokens=False))

    return Expander()


def _compel(
    pipe: Any,
    which: str,
    returned: Any,
    pooled: bool,
    truncate: bool = False,
    max_length: int | None = None,
) -> Any:
    """A compel for one of the pipeline's encoders; `truncate` and `max_length` (the window
    when not the tokenizer's own) for an encoder that reads one window only."""
    from compel import Compel

    encoder = getattr(pipe, "text_encoder" + which)
    tokenizer = getattr(pipe, "tokenizer" + which)
    return Compel(
        tokenizer=tokenizer,
        text_encoder=encoder,
        textual_inversion_manager=_inversions(pipe, tokenizer),
        dtype_for_device_getter=lambda _device: encoder.dtype,
        truncate_long_prompts=truncate,
        model_max_length=max_length,
        returned_embeddings_type=returned,
        requires_pooled=pooled,
        # where diffusers would run the encoder (cpu_offload leaves its weights elsewhere)
        device=getattr(pipe, "_execution_device", None),
    )


def _encode(compel: Any, prompt: str) -> Any:
    """One prompt's conditioning: each BREAK chunk encoded, concatenated on the token axis."""
    from compel.prompt_parser import Conjunction, FlattenedPrompt, Fragment

    parts = [
        FlattenedPrompt([Fragment(f.text, f.weight) for f in chunk])
        for chunk in a1111.chunks(prompt)
    ]
    conditioning, _options = compel.build_conditioning_tensor_for_conjunction(Conjunction(parts))
    return conditioning


def encode(
    pipe: Any,
    kind: str,
    prompt: str,
    negative: str | None,
    clip_skip: int,
    max_sequence_length: int | None = None,
) -> dict[str, Any]:
    """The embedding keywords that replace `prompt` and `negative_prompt` in the call;
    `max_sequence_length` is the call's own (None: the pipeline's default)."""
    import torch
    from compel import ReturnedEmbeddingsType as Returned

    if clip_skip > (1 if kind == "sd" else 0):
        raise InvalidRequest(
            f"clip_skip {clip_skip} cannot be combined with prompt weights or prompts past "
            f"77 tokens on this model (use clip_skip {'0 or 1' if kind == 'sd' else '0'})",
            param="clip_skip",
        )
    with torch.no_grad():
        if kind == "sd":
            returned = (
                Returned.PENULTIMATE_HIDDEN_STATES_NORMALIZED
                if clip_skip
                else Returned.LAST_HIDDEN_STATES_NORMALIZED
            )
            compel = _compel(pipe, "", returned, pooled=False)
            positive = _encode(compel, prompt)
            negative_embeds = _encode(compel, negative or "")
            positive, negative_embeds = compel.pad_conditioning_tensors_to_same_length(
                [positive, negative_embeds]
            )
            return {"prompt_embeds": positive, "negative_prompt_embeds": negative_embeds}
        if kind == "sd3":
            return _encode_sd3(pipe, prompt, negative, max_sequence_length or 256)
        if kind == "flux":
            return _encode_flux(pipe, prompt, negative, max_sequence_length or 512)
        return _encode_sdxl(pipe, prompt, negative)


def _clip_pair(pipe: Any, texts: list[str]) -> tuple[list[Any], list[Any], list[Any]]:
    """Both CLIP encoders' penultimate states side by side (padded to one length), and each
    encoder's pooled vectors of the texts' plain words."""
    import torch
    from compel import ReturnedEmbeddingsType as Returned

    penultimate = Returned.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED
    first = _compel(pipe, "", penultimate, pooled=False)
    second = _compel(pipe, "_2", penultimate, pooled=True)
    lefts = first.pad_conditioning_tensors_to_same_length([_encode(first, t) for t in texts])
    rights = second.pad_conditioning_tensors_to_same_length([_encode(second, t) for t in texts])
    width = max(lefts[0].shape[1], rights[0].shape[1])
    lefts = _pad_to(first, lefts, width)
    rights = _pad_to(second, rights, width)
    embeds = [torch.cat([left, right], dim=-1) for left, right in zip(lefts, rights, strict=True)]
    pooled = [
        [c.conditioning_provider.get_pooled_embeddings([a1111.plain_text(t)]) for t in texts]
        for c in (first, second)
    ]
    return embeds, pooled[0], pooled[1]


def _encode_sd3(pipe: Any, prompt: str, negative: str | None, length: int) -> dict[str, Any]:
    """SD3: the weighted CLIP pair (zero-padded to the T5 width) followed by T5's states of the
    plain words, which T5 reads unweighted; the pooled vectors of both CLIPs side by side."""
    import torch
    import torch.nn.functional as F

    texts = [prompt, negative or ""]
    embeds, pooled_1, pooled_2 = _clip_pair(pipe, texts)
    device = embeds[0].device
    out = []
    for text, clip in zip(texts, embeds, strict=True):
        plain = a1111.plain_text(text)
        whole = pipe.encode_prompt(
            plain,
            plain,
            plain,
            device=device,
            do_classifier_free_guidance=False,
            max_sequence_length=length,
        )[0]
        t5 = whole[:, pipe.tokenizer_max_length :, :]
        clip = F.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        out.append(torch.cat([clip, t5.to(clip.dtype)], dim=-2))
    pooled = [torch.cat([a, b], dim=-1) for a, b in zip(pooled_1, pooled_2, strict=True)]
    return {
        "prompt_embeds": out[0],
        "negative_prompt_embeds": out[1],
        "pooled_prompt_embeds": pooled[0],
        "negative_pooled_prompt_embeds": pooled[1],
    }


def _encode_flux(pipe: Any, prompt: str, negative: str | None, length: int) -> dict[str, Any]:
    """FLUX.1: T5's weighted states (padded to `length` tokens, as diffusers pads them) and
    CLIP's pooled vector of the plain words (compel's POOLED reads them so). A negative
    prompt's pair only where one is given: FLUX reads it for true CFG alone, and an empty one
    would switch that on."""
    from compel import ReturnedEmbeddingsType as Returned
    from compel.prompt_parser import Conjunction, FlattenedPrompt, Fragment

    pooled = _compel(pipe, "", Returned.POOLED, pooled=False, truncate=True)
    states = _compel(
        pipe, "_2", Returned.LAST_HIDDEN_STATES_NORMALIZED, False, truncate=True, max_length=length
    )
    found: dict[str, Any] = {}
    for text, prefix in ((prompt, ""), (negative, "negative_")):
        if text is None:
            continue
        words = [Fragment(f.text, f.weight) for chunk in a1111.chunks(text) for f in chunk]
        whole = Conjunction([FlattenedPrompt(words)])
        found[prefix + "prompt_embeds"] = states.build_conditioning_tensor_for_conjunction(whole)[0]
        found[prefix + "pooled_prompt_embeds"] = pooled.build_conditioning_tensor_for_conjunction(
            whole
        )[0]
    return found


def _encode_sdxl(pipe: Any, prompt: str, negative: str | None) -> dict[str, Any]:
    """Both CLIP encoders' penultimate states side by side, the pooled vector from the second."""
    import torch

    texts = [prompt, negative or ""]
    embeds, _first, pooled = _clip_pair(pipe, texts)
    if negative is None and getattr(pipe.config, "force_zeros_for_empty_prompt", False):
        embeds[1] = torch.zeros_like(embeds[0])  # what diffusers does for "no negative prompt"
        pooled[1] = torch.zeros_like(pooled[0])
    return {
        "prompt_embeds": embeds[0],
        "negative_prompt_embeds": embeds[1],
        "pooled_prompt_embeds": pooled[0],
        "negative_pooled_prompt_embeds": pooled[1],
    }


def _pad_to(compel: Any, tensors: list[Any], width: int) -> list[Any]:
    """Pad with the encoder's own empty-prompt windows up to `width` tokens."""
    import torch

    empty = compel.conditioning_provider.empty_z
    if empty.dim() == 2:
        empty = empty.unsqueeze(0)
    out = []
    for tensor in tensors:
        while tensor.shape[1] < width:
            tensor = torch.cat([tensor, empty.to(tensor.device, tensor.dtype)], dim=1)
        out.append(tensor)
    return out


def prompt_kwargs(
    pipe: Any,
    params: dict[str, Any],
    prompt: str,
    negative: str | None,
    clip_skip: int,
    max_sequence_length: int | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """The prompt keywords of a call and what was ignored: the prompts themselves where no
    weighting is needed, embeddings where it is and can be done, the stripped words elsewhere."""
    kind = kind_of(pipe, params)
    if kind is not None:
        if needs_encoding(pipe, [prompt, negative]):
            found = encode(pipe, kind, prompt, negative, clip_skip, max_sequence_length)
            return found, []
        return _plain(prompt, negative), []
    return _plain(strip_syntax(prompt), strip_syntax(negative)), ignored(
        pipe, params, prompt, negative
    )


def ignored(pipe: Any, params: dict[str, Any], prompt: str, negative: str | None) -> list[str]:
    """[NOTE] where the syntax is in a prompt this pipeline cannot weight (it was stripped)."""
    if kind_of(pipe, params) is None and (a1111.has_syntax(prompt) or a1111.has_syntax(negative)):
        return [NOTE]
    return []


def _plain(prompt: str | None, negative: str | None) -> dict[str, Any]:
    found: dict[str, Any] = {"prompt": prompt}
    if negative is not None:
        found["negative_prompt"] = negative
    return found
