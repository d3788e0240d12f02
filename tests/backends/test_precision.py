"""The precision rule (load/precision.py): one decision for loading, the memory estimate and
`models show`, and the precision each model reports through the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from localimg.backends.diffusers.load.loading import class_to_load
from localimg.backends.diffusers.load.precision import decide
from localimg.backends.diffusers.options import parse_options
from localimg.config import ModelConfig, config_from_dict, resolve_model
from tests.support.hf_cache import use_cache


def config(tmp_path: Path, **extra: Any) -> ModelConfig:
    data = {"name": "m", "parameters": {"model": "owner/name"}, **extra}
    return config_from_dict(data, where="m.yaml", models_path=tmp_path)


def dtype(cfg: ModelConfig, device: str, cls: str | None = None, **kw: Any) -> str:
    return decide(cfg, parse_options(cfg), device, cls, **kw).dtype


SD = "StableDiffusionPipeline"
FLUX = "FluxPipeline"


def test_automatic_precision_follows_device_and_family(tmp_path: Path) -> None:
    auto = config(tmp_path)
    assert dtype(auto, "cuda", SD) == "float16"
    assert dtype(auto, "cuda", "StableDiffusionXLPipeline") == "float16"
    assert dtype(auto, "cuda") == "float16"  # family not known: the SD-era default
    for family in (
        FLUX,
        "Flux2KleinPipeline",
        "StableDiffusion3Pipeline",
        "ZImagePipeline",
        "QwenImageEditPlusPipeline",
        "ChromaPipeline",
        "WanPipeline",
    ):
        assert dtype(auto, "cuda:1", family) == "bfloat16", family
    assert dtype(auto, "cuda", FLUX, gpu_bfloat16=False) == "float16"
    assert dtype(auto, "mps", FLUX) == "float16"
    assert dtype(auto, "cpu", FLUX, cpu_bfloat16=True) == "float32"


def test_f16_opts_in_on_the_cpu_and_false_forces_float32(tmp_path: Path) -> None:
    half = config(tmp_path, f16=True)
    assert dtype(half, "cpu", cpu_bfloat16=True) == "bfloat16"
    assert dtype(half, "cpu", cpu_bfloat16=False) == "float32"
    assert dtype(half, "cuda", SD) == "float16"
    assert dtype(half, "cuda", FLUX) == "bfloat16"
    full = config(tmp_path, f16=False)
    for device in ("cpu", "cuda", "mps"):
        assert dtype(full, device, FLUX, cpu_bfloat16=True) == "float32"


def test_the_dtype_option_wins_over_everything(tmp_path: Path) -> None:
    forced = config(tmp_path, f16=False, options=["dtype:bf16"])
    for device in ("cpu", "cuda", "mps"):
        assert dtype(forced, device, SD, cpu_bfloat16=False) == "bfloat16"
    assert dtype(config(tmp_path, f16=True, options=["dtype:fp32"]), "cuda", FLUX) == "float32"


def test_each_decision_says_why(tmp_path: Path) -> None:
    fallback = decide(
        config(tmp_path, f16=True), parse_options(config(tmp_path)), "cpu", cpu_bfloat16=False
    )
    assert "native bfloat16" in fallback.reason and "dtype:bfloat16" in fallback.reason
    flux = decide(config(tmp_path), parse_options(config(tmp_path)), "cuda", FLUX)
    assert flux.reason == "automatic: FluxPipeline is published in bfloat16"
    assert (
        "f16: false"
        in decide(config(tmp_path, f16=False), parse_options(config(tmp_path)), "cuda").reason
    )


def test_hub_presets_opt_in_and_fetch_fp16_files(tmp_path: Path) -> None:
    for repo in ("stabilityai/sd-turbo", "stabilityai/sdxl-turbo"):
        preset = resolve_model(repo, tmp_path)
        decision = decide(preset, parse_options(preset), "cuda", SD)
        assert (preset.f16, decision.variant, decision.dtype) == (True, "fp16", "float16")
    other = resolve_model("owner/some-model", tmp_path)
    assert other.f16 is None and decide(other, parse_options(other), "cpu").variant is None


def test_the_class_that_will_load_is_known_before_loading(
    tmp_path: Path, tiny_sd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def cls_of(**extra: Any) -> str | None:
        cfg = config(tmp_path, **extra)
        return class_to_load(cfg, parse_options(cfg), hub=False)

    assert cls_of(parameters={"model": str(tiny_sd)}) == SD
    assert cls_of(diffusers={"pipeline_type": "FluxPipeline"}) == FLUX
    assert cls_of(diffusers={"pipeline_type": "FluxTransformer2DModel"}) == FLUX
    use_cache(monkeypatch, tmp_path, offline=True)
    assert cls_of() is None  # an uncached hub repo, offline: not known, no exception


# -- what the CLI reports -----------------------------------------------------------------------


def show(*args: str) -> dict[str, Any]:
    from localimg.cli import app

    result = CliRunner().invoke(app, ["models", "show", *args, "--json"])
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_models_show_takes_whatever_generate_takes_offline(
    models_dir: Path, tiny_sd: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_cache(monkeypatch, tmp_path, offline=True)
    monkeypatch.setenv("LOCALIMG_CPU_BF16", "0")
    yaml_file = tmp_path / "half.yaml"
    yaml_file.write_text(f"name: half\nf16: true\nparameters:\n  model: {tiny_sd}\n")
    cases = {
        "tiny": ("float32", True),  # installed
        "sd-turbo": ("float32", False),  # a gallery name, not installed
        str(yaml_file): ("float32", False),
        str(tiny_sd): ("float32", False),  # a folder
        str(tiny_sd / "unet" / "diffusion_pytorch_model.safetensors"): ("float32", False),
        "stabilityai/sd-turbo": ("float32", False),  # a hub id, offline and not cached
    }
    for ref, (expected, installed) in cases.items():
        data = show(ref)
        assert data["installed"] is installed, ref
        assert data["precision"]["device"] == "cpu", ref
        assert data["precision"]["dtype"] == expected, ref
        assert data["precision"]["reason"], ref
    assert show("sd-turbo")["precision"]["variant"] == "fp16"
    assert show("stabilityai/sd-turbo")["precision"]["variant"] == "fp16"
    assert "native bfloat16" in show(str(yaml_file))["precision"]["reason"]
    monkeypatch.setenv("LOCALIMG_CPU_BF16", "1")
    assert show(str(yaml_file))["precision"]["dtype"] == "bfloat16"
    assert show("tiny")["precision"]["dtype"] == "float32"  # no f16: float32 on a CPU


def test_models_show_of_an_unknown_name_is_one_clear_line(models_dir: Path) -> None:
    from localimg.cli import app

    result = CliRunner().invoke(app, ["models", "show", "no-such-model"])
    assert result.exit_code != 0
    assert "no-such-model" in result.output and "Traceback" not in result.output
    assert "a YAML file, a folder, a weight file or a hub id" in result.output
    close = CliRunner().invoke(app, ["models", "show", "sd-turb"])
    assert close.exit_code != 0 and "Did you mean sd-turbo" in close.output
    missing = CliRunner().invoke(app, ["models", "show", "./missing.yaml"])
    assert missing.exit_code != 0 and "missing.yaml does not exist" in missing.output


def test_models_list_and_show_print_the_precision(models_dir: Path) -> None:
    from localimg.cli import app

    listed = CliRunner().invoke(app, ["models", "list", "--json"])
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["tiny"]["precision"]["dtype"] == "float32"
    table = CliRunner().invoke(app, ["models", "list"])
    assert "float32 on cpu" in table.stdout
    text = CliRunner().invoke(app, ["models", "show", "tiny"])
    assert text.exit_code == 0 and "precision: float32 on cpu" in text.stdout


def test_a_device_that_is_not_here_is_reported_not_raised(models_dir: Path) -> None:
    data = show("tiny", "--device", "cuda:3")
    assert data["precision"]["dtype"] is None and "not available" in data["precision"]["reason"]
