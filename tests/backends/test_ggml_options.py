"""localimg/backends/ggml/options.py and lora.py: the YAML's options and prompt LoRA tags, checked
without the native library."""

from __future__ import annotations

from pathlib import Path

import pytest

from localimg.backends.ggml.lora import lora_tags
from localimg.backends.ggml.options import parse_options
from localimg.config import ModelConfig, config_from_dict
from localimg.errors import ConfigError, InvalidRequest


def ggml_config(tmp_path: Path, options: list[str]) -> ModelConfig:
    data = {
        "name": "g",
        "backend": "stablediffusion-ggml",
        "parameters": {"model": "m.gguf"},
        "options": options,
    }
    return config_from_dict(data, where="g.yaml", models_path=tmp_path)


def test_bad_option_value_names_file_key_message_and_value(tmp_path: Path) -> None:
    config = ggml_config(tmp_path, ["clip_skip:99"])
    with pytest.raises(ConfigError) as err:
        parse_options(config)
    assert err.value.message == (
        f"{config.where}: options: clip_skip: Input should be less than or equal to 24 (got 99)"
    )


def test_validator_message_has_no_value_error_prefix(tmp_path: Path) -> None:
    config = ggml_config(tmp_path, ["wtype:q9"])
    with pytest.raises(ConfigError) as err:
        parse_options(config)
    expected = f"{config.where}: options: wtype: unknown weight type; use one of"
    assert err.value.message.startswith(expected)
    assert "Value error" not in err.value.message and "(got 'q9')" in err.value.message


def test_lora_tags_resolve_files_and_refuse_escapes(tmp_path: Path) -> None:
    (tmp_path / "style.safetensors").write_bytes(b"")
    prompt, found = lora_tags("an otter <lora:style:0.5>", tmp_path)
    assert prompt == "an otter" and found == [((tmp_path / "style.safetensors").resolve(), 0.5)]
    with pytest.raises(InvalidRequest, match="outside the LoRA folder"):
        lora_tags("<lora:../x:1>", tmp_path)
    with pytest.raises(InvalidRequest, match="the weight must be a number"):
        lora_tags("<lora:style:big>", tmp_path)


def test_new_family_options_parse_and_refuse_bad_values(tmp_path: Path) -> None:
    options = parse_options(
        ggml_config(
            tmp_path,
            [
                "llm_path:qwen_3_4b.safetensors",
                "llm_vision_path:mmproj.gguf",
                "clip_vision_path:clip_vision_h.safetensors",
                "high_noise_diffusion_model_path:wan2.2_high.gguf",
                "high_noise_steps:8",
                "high_noise_sampler:euler",
                "high_noise_scheduler:simple",
                "moe_boundary:0.9",
                "flow_shift:5",
                "reference_edit:true",
                "offload_params_to_cpu:true",
                "diffusion_flash_attn:true",
            ],
        )
    )
    assert options.llm_path == "qwen_3_4b.safetensors" and options.flow_shift == 5.0
    assert options.high_noise_steps == 8 and options.moe_boundary == 0.9
    assert options.reference_edit and options.offload_params_to_cpu
    with pytest.raises(ConfigError, match="flow_shift: Input should be greater than 0"):
        parse_options(ggml_config(tmp_path, ["flow_shift:0"]))
    with pytest.raises(ConfigError, match=r"unknown high_noise_sampler .bogus."):
        parse_options(ggml_config(tmp_path, ["high_noise_sampler:bogus"]))
    with pytest.raises(ConfigError, match=r"moe_boundary sets how the Wan 2\.2 high-noise"):
        parse_options(ggml_config(tmp_path, ["moe_boundary:0.8"]))


def test_weight_files_lists_every_file_the_yaml_names(tmp_path: Path) -> None:
    from localimg.backends.ggml.backend import GgmlBackend

    for name in ("m.gguf", "llm.gguf", "ae.safetensors"):
        (tmp_path / name).write_bytes(b"x")
    config = ggml_config(tmp_path, ["llm_path:llm.gguf", "vae_path:ae.safetensors"])
    names = [path.name for path in GgmlBackend.weight_files(config)]
    assert names == ["m.gguf", "llm.gguf", "ae.safetensors"]


@pytest.mark.parametrize(
    ("version", "log", "expected"),
    [
        ("SD 1.x", [], ("SD 1.x", 64, 512, 7.0, 0, False)),
        ("SDXL", [], ("SDXL", 64, 1024, 7.0, 0, False)),
        ("Flux", [], ("FLUX.1 (Flux)", 8, 1024, 1.0, 0, False)),
        ("Flux", ["Using pruned modulation (Chroma)"], ("Chroma", 8, 1024, 4.0, 0, False)),
        ("Flux.2", [], ("FLUX.2", 16, 1024, 1.0, 10, False)),
        ("Flux.2 klein", [], ("FLUX.2 klein", 16, 1024, 1.0, 10, False)),
        ("Qwen Image", [], ("Qwen-Image", 8, 1024, 2.5, 0, False)),
        ("Z-Image", [], ("Z-Image", 8, 1024, 1.0, 0, False)),
        ("SD3.x", [], ("SD3.x", 8, 1024, 4.5, 0, False)),
        ("Wan 2.x", ["wan.hpp:2201 - Wan2.1-T2V-1.3B"], ("Wan2.1-T2V-1.3B", 16, 0, 5.0, 0, True)),
        ("Wan 2.2 TI2V", ["Wan2.2-TI2V-5B"], ("Wan2.2-TI2V-5B", 32, 0, 5.0, 0, True)),
    ],
)
def test_family_facts(version: str, log: list[str], expected: tuple[object, ...]) -> None:
    from localimg.backends.ggml.families import family_of

    family = family_of(version, log)
    facts = (family.label, family.size_multiple, family.side, family.cfg_scale)
    assert (*facts, family.references, family.video) == expected


def test_families_that_need_the_yaml_or_the_log_to_tell() -> None:
    from localimg.backends.ggml.families import family_of, guidance_embed

    kontext = family_of("Flux", [], reference_edit=True)
    assert (kontext.label, kontext.references, kontext.guidance) == ("FLUX.1 Kontext", 1, True)
    schnell = family_of("Flux", [], guidance=guidance_embed(["flux: guidance_embed = false"]))
    assert not schnell.guidance
    assert family_of("Flux.2", [], guidance=True).guidance
    assert not family_of("Flux.2 klein", [], guidance=True).guidance
    assert family_of("Qwen Image", [], reference_edit=True).references == 3
    i2v = family_of("Wan 2.2 I2V", ["Wan2.2-I2V-14B"])
    assert i2v.image_input_video and not i2v.end_image and i2v.fps == 16.0
    flf = family_of("Wan 2.x", ["Wan2.1-FLF2V-14B"])
    assert flf.image_input_video and flf.end_image
    t2v = family_of("Wan 2.x", ["Wan2.x-T2V-14B"])
    assert not t2v.image_input_video and (t2v.width, t2v.height) == (832, 480)
    ti2v = family_of("Wan 2.2 TI2V", ["Wan2.2-TI2V-5B"])
    assert ti2v.image_input_video and ti2v.fps == 24.0


def test_wan_frame_rule() -> None:
    from localimg.backends.ggml.families import check_frames, family_of

    wan = family_of("Wan 2.x", ["Wan2.1-T2V-1.3B"])
    for frames in (1, 5, 33, 81):
        check_frames(frames, wan)
    with pytest.raises(InvalidRequest, match=r"num_frames 80: .* use 77 or 81"):
        check_frames(80, wan)
