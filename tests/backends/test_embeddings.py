"""Textual-inversion embeddings on the diffusers engine: every file of the models dir's
`embeddings/` that fits the tiny SD's text encoder (32 wide) is loaded under its file stem, so
its name in a prompt changes the image; one of another width is skipped with a log line."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from localimg.engine import Engine, EngineSettings
from localimg.requests import ImageRequest, ImageResult

PROMPT = "an otter tinystyle sdonestyle"


def fitting_vectors() -> torch.Tensor:
    return torch.randn(2, 32, generator=torch.Generator().manual_seed(3)) * 5


def models_dir(folder: Path, tiny_sd: Path, with_embeddings: bool) -> Path:
    folder.mkdir(parents=True)
    (folder / "tiny.yaml").write_text(
        f"name: tiny\nbackend: diffusers\nparameters:\n  model: {tiny_sd}\nstep: 3\n",
        encoding="utf-8",
    )
    if with_embeddings:
        (folder / "embeddings").mkdir()
        fitting = {"emb_params": fitting_vectors()}
        save_file(fitting, str(folder / "embeddings" / "tinystyle.safetensors"))
        wrong = {"emb_params": torch.randn(1, 768)}
        save_file(wrong, str(folder / "embeddings" / "sdonestyle.safetensors"))
    return folder


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory, tiny_sd: Path) -> Iterator[list[Engine]]:
    root = tmp_path_factory.mktemp("embeddings")
    made = [
        Engine(EngineSettings(models_path=models_dir(root / name, tiny_sd, name == "with")))
        for name in ("with", "without")
    ]
    yield made
    for engine in made:
        engine.close()


def generate(engine: Engine, prompt: str = PROMPT) -> ImageResult:
    return engine.generate("tiny", ImageRequest(prompt, seed=5))


def pixels(result: ImageResult) -> np.ndarray:
    return np.asarray(result.images[0].convert("RGB"), dtype=np.int16)


def test_an_embedding_used_by_name_changes_the_image(
    engines: list[Engine], caplog: pytest.LogCaptureFixture
) -> None:
    with_them, without = engines
    with caplog.at_level(logging.INFO, logger="localimg"):
        used = generate(with_them)
    plain = generate(without)
    assert np.abs(pixels(used) - pixels(plain)).max() > 0
    pipe = with_them.slots["tiny"].backend.pipe  # type: ignore[attr-defined]
    assert "tinystyle" in pipe.tokenizer.get_vocab()
    assert "sdonestyle" not in pipe.tokenizer.get_vocab()
    rows = pipe.text_encoder.get_input_embeddings().weight
    ids = pipe.tokenizer.convert_tokens_to_ids(["tinystyle", "tinystyle_1"])
    assert torch.allclose(rows[ids].detach(), fitting_vectors())
    skipped = [r.getMessage() for r in caplog.records if "'sdonestyle' skipped" in r.getMessage()]
    assert len(skipped) == 1 and "768" in skipped[0]


def test_a_prompt_without_the_embedding_is_unchanged(engines: list[Engine]) -> None:
    with_them, without = engines
    a, b = generate(with_them, "an otter"), generate(without, "an otter")
    assert np.abs(pixels(a) - pixels(b)).max() == 0


def test_an_sdxl_embedding_loads_each_part_into_its_encoder(tmp_path: Path) -> None:
    """clip_l to text_encoder/tokenizer, clip_g to text_encoder_2/tokenizer_2 (a recording pipe:
    the tiny test models have no SDXL)."""
    from types import SimpleNamespace
    from typing import Any

    from localimg.backends.diffusers.load.embeddings import encoder_widths, load_embeddings
    from localimg.config import ModelConfig

    folder = tmp_path / "embeddings"
    folder.mkdir()
    parts = {"clip_l": torch.randn(3, 768), "clip_g": torch.randn(3, 1280)}
    save_file(parts, str(folder / "painterly.safetensors"))
    save_file({"emb_params": torch.randn(1, 768)}, str(folder / "sd1.safetensors"))
    calls: list[tuple[Any, ...]] = []

    def encoder(width: int) -> SimpleNamespace:
        return SimpleNamespace(config=SimpleNamespace(hidden_size=width))

    pipe = SimpleNamespace(
        text_encoder=encoder(768),
        text_encoder_2=encoder(1280),
        tokenizer="tok1",
        tokenizer_2="tok2",
        load_textual_inversion=lambda t, **kw: calls.append((tuple(t.shape), kw["token"], kw)),
    )
    assert encoder_widths(pipe) == (768, 1280)
    config = ModelConfig.model_validate({"name": "x", "models_path": tmp_path})
    assert load_embeddings(pipe, config) == ["painterly"]
    assert [(shape, token, kw["tokenizer"]) for shape, token, kw in calls] == [
        ((3, 768), "painterly", "tok1"),
        ((3, 1280), "painterly", "tok2"),
    ]
    assert calls[1][2]["text_encoder"] is pipe.text_encoder_2


def test_an_embedding_inside_a1111_weights_is_used_too(engines: list[Engine]) -> None:
    """A weighted prompt goes through compel (pipeline/prompt_weights.py), which spreads the
    embedding's tokens to its vectors as diffusers' own encoding does."""
    with_them, without = engines
    weighted = "(an otter tinystyle:1.2)"
    used, plain = generate(with_them, weighted), generate(without, weighted)
    assert np.abs(pixels(used) - pixels(plain)).max() > 0
