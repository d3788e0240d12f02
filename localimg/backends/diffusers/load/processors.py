"""Qwen-Image-Edit's processor on machines without torchvision.

QwenImageEdit(Plus)Pipeline reads its input images through a `Qwen2VLProcessor` (the tokenizer
plus Qwen2-VL's image processor). In transformers 5 that processor also wants a video processor,
which exists only with torchvision, so loading the pipeline failed wherever torchvision is not
installed — CPU-only setups among them, since PyPI's torchvision wheels are built for CUDA torch.
Qwen-Image-Edit never passes videos. Here the same processor is built from the repo's
`processor/` folder with the PIL image processor and no video processor, and handed to
`from_pretrained` as the `processor` component; the pipeline calls it exactly as before.
Where torchvision is installed nothing changes.
"""

from __future__ import annotations

import importlib.util
from typing import Any

# The pipelines that read images through a Qwen-VL processor, and its class (Qwen-Image 2.x's
# Qwen3-VL processor needs a video processor just the same).
QWEN_VL_PROCESSORS = {
    "QwenImageEditPlusPipeline": "Qwen2VLProcessor",
    "QwenImageEditPipeline": "Qwen2VLProcessor",
    "QwenImageLayeredPipeline": "Qwen2VLProcessor",
    "QwenImage21Pipeline": "Qwen3VLProcessor",
}
QWEN_VL_EDIT_PIPELINES = frozenset(QWEN_VL_PROCESSORS)


def image_only_processor_class(base: str = "Qwen2VLProcessor") -> type:
    """The processor class `base` that accepts having no video processor."""
    import transformers

    parent: Any = getattr(transformers, base)

    class ImageOnlyQwen2VLProcessor(parent):
        """The processor without the video processor (the part that needs torchvision)."""

        def check_argument_for_proper_class(self, attribute_name: str, arg: Any) -> Any:
            if attribute_name == "video_processor" and arg is None:
                return None
            return super().check_argument_for_proper_class(attribute_name, arg)

        def save_pretrained(self, save_directory: Any, *args: Any, **kwargs: Any) -> list[str]:
            """The two parts it has, in the layout of a repo's `processor/` folder."""
            saved = list(self.tokenizer.save_pretrained(save_directory))
            saved += list(self.image_processor.save_pretrained(save_directory))
            return saved

    return ImageOnlyQwen2VLProcessor


def image_only_processor(
    image_processor: Any, tokenizer: Any, base: str = "Qwen2VLProcessor"
) -> Any:
    """A Qwen-VL processor (class `base`) from its two image-side parts."""
    return image_only_processor_class(base)(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=None,
        chat_template=getattr(tokenizer, "chat_template", None),
    )


def replacement_components(class_name: str, location: str, common: dict[str, Any]) -> dict:
    """Components to pass to `from_pretrained` instead of loading them: {} when none is needed."""
    if class_name not in QWEN_VL_EDIT_PIPELINES or importlib.util.find_spec("torchvision"):
        return {}
    from transformers import AutoTokenizer, Qwen2VLImageProcessorPil

    hub = {key: common[key] for key in ("revision", "local_files_only") if key in common}
    tokenizer = AutoTokenizer.from_pretrained(location, subfolder="processor", **hub)
    images = Qwen2VLImageProcessorPil.from_pretrained(location, subfolder="processor", **hub)
    base = QWEN_VL_PROCESSORS[class_name]
    return {"processor": image_only_processor(images, tokenizer, base)}
