"""Weights in one byte each: `options: ["quantization:int8"]` or `["quantization:fp8"]`.

- int8: torchao's weight-only int8 (`Int8WeightOnlyConfig`): every linear layer of the denoiser
  and the text encoders keeps int8 weights with a per-row scale; activations stay in the
  pipeline's dtype. Runs wherever torch runs (measured on this CPU and on CUDA).
- fp8: diffusers' layerwise casting: the denoiser stores its weights as float8_e4m3fn and each
  layer casts them up to the compute dtype for its own forward (norms and embeddings stay as
  they are, diffusers' own skip list). torch runs it on CUDA and on the CPU alike. Only diffusers
  models: a transformers text encoder under the same hooks still reports float8 as its `dtype`,
  and pipelines make their latents in the text encoder's dtype (measured: SD1.5 then fails).

int8 in bfloat16 from a diffusers folder or repo is quantized while loading (diffusers'
`PipelineQuantizationConfig`, each weight quantized as it is read), so the whole model never sits
in memory at 2 bytes a weight; the same int8 weights (measured: identical pixels) as quantizing
afterwards, which is what every other case does (single files; float32, where diffusers' torchao
loader leaves float32 inputs meeting bfloat16 biases). fp8 is applied to the loaded pipeline,
after placement (`speed.place`) so its casting hooks wrap the batch-invariant linear layers
instead of being replaced by them, and before `torch.compile`. The VAE keeps its dtype: it is
small and the most sensitive to rounding.
"""

from __future__ import annotations

import logging
from typing import Any

from localimg.backends.diffusers.options import DiffusersOptions
from localimg.errors import BackendNotInstalled, ConfigError

log = logging.getLogger(__name__)

QUANTIZATIONS = ("int8", "fp8")
DENOISERS = ("unet", "transformer", "transformer_2")
TEXT_ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")


def quiet_torchao() -> None:
    """torchao logs a warning per CUDA kernel library it cannot load on a CPU-only torch (it
    is imported by transformers whenever installed); the CPU kernels work, so keep them quiet."""
    logging.getLogger("torchao").setLevel(logging.ERROR)


def check(options: DiffusersOptions, gguf: bool, device: str) -> None:
    """Refuse combinations that cannot work, before anything loads."""
    if options.quantization is None:
        return
    if gguf:
        raise ConfigError(
            f"options: quantization:{options.quantization} cannot be combined with a .gguf model "
            "file, whose weights are quantized already; remove the option, or use the "
            "safetensors model to quantize it here"
        )
    if options.quantization == "int8" and device == "mps":
        raise ConfigError("options: quantization:int8 (torchao) runs on CUDA and the CPU, not MPS")


def load_time_config(options: DiffusersOptions, dtype: Any, index: dict[str, Any]) -> Any:
    """The `quantization_config` for from_pretrained that quantizes int8 while loading, or None
    where quantizing afterwards is the way (see the module's docstring)."""
    import torch

    if options.quantization != "int8" or dtype != torch.bfloat16:
        return None
    quiet_torchao()
    try:
        import diffusers
        import transformers
        from torchao.quantization import Int8WeightOnlyConfig
    except ImportError:
        return None  # quantize_int8 says what to install
    mapping: dict[str, Any] = {}
    for name in (*DENOISERS, *TEXT_ENCODERS):
        entry = index.get(name)
        if not (isinstance(entry, list) and len(entry) == 2 and entry[1]):
            continue
        if entry[0] == "diffusers":
            mapping[name] = diffusers.TorchAoConfig(Int8WeightOnlyConfig())
        elif entry[0] == "transformers":
            mapping[name] = transformers.TorchAoConfig(Int8WeightOnlyConfig())
    return diffusers.PipelineQuantizationConfig(quant_mapping=mapping) if mapping else None


def is_int8(module: Any) -> bool:
    """Whether the module's linear layers hold torchao int8 weights already."""
    import torch

    for layer in module.modules():
        if isinstance(layer, torch.nn.Linear):
            return type(layer.weight).__name__ == "Int8Tensor"
    return False


def modules_to_quantize(pipe: Any) -> dict[str, Any]:
    """The pipeline's denoisers and text encoders that are torch modules, by name."""
    import torch

    found = {}
    for name in (*DENOISERS, *TEXT_ENCODERS):
        module = getattr(pipe, name, None)
        if isinstance(module, torch.nn.Module):
            found[name] = module
    return found


def quantize(pipe: Any, options: DiffusersOptions, dtype: Any) -> list[str]:
    """Apply the quantization the options ask for; returns the quantized components' names."""
    if options.quantization is None:
        return []
    modules = modules_to_quantize(pipe)
    if options.quantization == "fp8":
        modules = {k: v for k, v in modules.items() if k in DENOISERS}
    if not modules:
        raise ConfigError(
            f"options: quantization:{options.quantization} needs a pipeline with a UNet or "
            f"transformer; {type(pipe).__name__} has none"
        )
    if options.quantization == "int8":
        quantize_int8(modules)
    else:
        store_fp8(modules, dtype)
    log.info("quantization %s: %s", options.quantization, ", ".join(modules))
    return list(modules)


def quantize_int8(modules: dict[str, Any]) -> None:
    quiet_torchao()
    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_
    except ImportError as exc:
        raise BackendNotInstalled(
            f"options: quantization:int8 needs torchao: pip install torchao ({exc})"
        ) from None
    for module in modules.values():
        if not is_int8(module):  # quantized while loading (load_time_config)
            quantize_(module, Int8WeightOnlyConfig())


def store_fp8(modules: dict[str, Any], dtype: Any) -> None:
    import torch

    for name, module in modules.items():
        if not hasattr(module, "enable_layerwise_casting"):
            raise ConfigError(
                f"options: quantization:fp8 needs a diffusers model as {name}; "
                f"{type(module).__name__} has no layerwise casting: use quantization:int8"
            )
        module.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=dtype)
