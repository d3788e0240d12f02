"""`<lora:name:weight>` prompt tags on the diffusers engine (load/lora_adapters.py, with the
tags' syntax in localimg/prompts/lora_tags.py): through the engine, the batching queue, the CLI and
the OpenAI route, with tiny random LoRAs built for the tiny SD pipeline."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from localimg.engine import Engine, EngineSettings
from localimg.engine.batching import batch_key
from localimg.errors import InvalidRequest
from localimg.prompts.lora_tags import lora_tags, parse_tags, strip_tags
from localimg.requests import ImageRequest, ImageResult, ProgressEvent
from tests.support.server_support import assert_openai_error, b64_image, write_model

BASE = ImageRequest(prompt="an otter", steps=3, width=64, height=64, seed=11)


def wrong_family(lora: Path, out: Path) -> Path:
    """The LoRA reshaped as if made for a wider UNet: its layers no longer fit the tiny one."""
    tensors = load_file(str(lora))
    wider = {
        key: value.new_zeros((value.shape[0] + 8, value.shape[1])) if ".up." in key else value
        for key, value in tensors.items()
    }
    save_file(wider, str(out))
    return out


def build_loras(folder: Path, tiny_sd: Path) -> Path:
    from tests.support.tiny_models import build_tiny_lora

    loras = folder / "loras"
    build_tiny_lora(tiny_sd, loras / "style.safetensors", seed=1)
    build_tiny_lora(tiny_sd, loras / "other.safetensors", seed=2)
    wrong_family(loras / "style.safetensors", loras / "bigger.safetensors")
    return loras


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tiny_sd: Path) -> Path:
    folder = tmp_path_factory.mktemp("lora-models")
    build_loras(folder, tiny_sd)
    write_model(folder, "tiny", tiny_sd)
    write_model(folder, "tiny-yaml", tiny_sd, extra="lora_adapters: [loras/other.safetensors]\n")
    return folder


@pytest.fixture(scope="module")
def engine(models: Path) -> Iterator[Engine]:
    engine = Engine(EngineSettings(models_path=models, max_batch=4, keep_alive=None))
    yield engine
    engine.close()


def run(engine: Engine, prompt: str, model: str = "tiny", **fields: Any) -> np.ndarray:
    result = engine.generate(model, BASE.with_(prompt=prompt, **fields))
    return pixels(result)


def pixels(result: ImageResult) -> np.ndarray:
    return np.asarray(result.images[0].convert("RGB"), dtype=np.int16)


def test_tags_parse_with_optional_weight_and_range(tmp_path: Path) -> None:
    assert parse_tags("a <lora:x> b <lora:y:-0.5>") == [("x", 1.0), ("y", -0.5)]
    assert strip_tags("<lora:x:2> an otter") == "an otter"
    with pytest.raises(InvalidRequest, match="between -10 and 10"):
        parse_tags("<lora:x:11>")
    (tmp_path / "watercolor.pt").write_bytes(b"")
    assert lora_tags("<lora:watercolor>", tmp_path)[1] == [((tmp_path / "watercolor.pt"), 1.0)]
    with pytest.raises(InvalidRequest, match=r"did you mean watercolor\?") as err:
        lora_tags("<lora:watercolour:1>", tmp_path)
    assert str(tmp_path) in err.value.message


def test_tags_change_the_image_for_one_request_and_stack(engine: Engine) -> None:
    plain = run(engine, "an otter")
    backend = engine.slots["tiny"].backend  # type: ignore[attr-defined]
    calls = []
    load = backend.pipe.load_lora_weights

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs["adapter_name"])
        return load(*args, **kwargs)

    backend.pipe.load_lora_weights = counting
    try:
        style = run(engine, "an otter <lora:style:1>")
        assert np.abs(style - plain).max() > 0
        assert np.array_equal(run(engine, "an otter"), plain)  # the next request is clean
        assert np.array_equal(run(engine, "an otter <lora:style:0>"), plain)
        assert np.array_equal(run(engine, "<lora:style.safetensors:1> an otter"), style)
        other = run(engine, "an otter <lora:other:1>")
        both = run(engine, "an otter <lora:style:1> <lora:other>")
        assert all(np.abs(both - alone).max() > 0 for alone in (style, other, plain))
        # a tag in the negative prompt counts too, and is not read as text
        negative = run(engine, "an otter", negative_prompt="<lora:style:1>")
        assert np.array_equal(negative, run(engine, "an otter <lora:style:1>", negative_prompt=""))
    finally:
        backend.pipe.load_lora_weights = load
    assert calls == ["tag0", "tag1"]  # each file loaded once, then cached
    assert np.array_equal(run(engine, "an otter"), plain)


def test_tags_combine_with_the_yaml_adapters(engine: Engine) -> None:
    yaml_plain = run(engine, "an otter", "tiny-yaml")
    assert np.abs(yaml_plain - run(engine, "an otter")).max() > 0
    tagged = run(engine, "an otter <lora:style:1>", "tiny-yaml")
    assert np.abs(tagged - yaml_plain).max() > 0
    # tag + YAML == both tags on the plain model (the YAML's other.safetensors at scale 1, first)
    assert np.array_equal(tagged, run(engine, "an otter <lora:other:1> <lora:style:1>"))
    assert np.array_equal(run(engine, "an otter", "tiny-yaml"), yaml_plain)


def test_missing_wrong_family_and_bad_weights_are_clear_errors(engine: Engine) -> None:
    plain = run(engine, "an otter")
    with pytest.raises(InvalidRequest, match=r"LoRA 'styl' not found in .*loras.*did you mean"):
        run(engine, "an otter <lora:styl:1>")
    with pytest.raises(InvalidRequest, match="made for another model family") as err:
        run(engine, "an otter <lora:bigger:1>")
    assert "bigger.safetensors" in err.value.message, err.value.message
    assert "size mismatch" in err.value.message
    assert "Traceback" not in err.value.message
    with pytest.raises(InvalidRequest, match="between -10 and 10"):
        run(engine, "an otter <lora:style:-12>")
    backend = engine.slots["tiny"].backend  # type: ignore[attr-defined]
    names = {name for names in backend.pipe.get_list_adapters().values() for name in names}
    assert "tag2" not in names, names  # the half-loaded adapter was dropped
    assert np.array_equal(run(engine, "an otter"), plain)  # the failed load left nothing behind


def test_requests_with_other_tags_do_not_share_a_batch(engine: Engine) -> None:
    plain_key = batch_key(BASE)
    assert batch_key(BASE.with_(prompt="a fox <lora:style:1>")) != plain_key
    assert batch_key(BASE.with_(prompt="<lora:style:1> x")) == batch_key(
        BASE.with_(prompt="y <lora:style:1>")
    )
    started, release = threading.Event(), threading.Event()

    def hold(event: ProgressEvent) -> None:
        if event.phase == "step":
            started.set()
            release.wait(120)

    holder = engine.submit("tiny", BASE.with_(seed=99), hold)
    assert started.wait(120)
    prompts = ["an otter <lora:style:1>", "an otter", "an otter <lora:style:1>", "an otter"]
    jobs = [engine.submit("tiny", BASE.with_(prompt=p, seed=3)) for p in prompts]
    release.set()
    holder.result(120)
    done = [job.result(300) for job in jobs]
    assert [r.timings.get("batch") for r in done] == [2.0] * 4  # two batches of two
    results = [pixels(result) for result in done]
    assert np.array_equal(results[0], results[2]) and np.array_equal(results[1], results[3])
    assert np.array_equal(results[1], run(engine, "an otter", seed=3))
    assert np.array_equal(results[0], run(engine, "an otter <lora:style:1>", seed=3))


def test_the_cli_and_the_openai_route_take_tags(
    models_dir: Path, tiny_sd: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from localimg.cli import app
    from tests.support.served import ServeSpec, serve_in_process

    build_loras(models_dir, tiny_sd)
    runner = CliRunner()
    args = ["generate", "-m", "tiny", "--seed", "4", "--steps", "3"]
    plain = runner.invoke(app, [*args, "an otter", "-o", str(tmp_path / "plain.png")])
    tagged = runner.invoke(app, [*args, "an otter <lora:style>", "-o", str(tmp_path / "t.png")])
    assert plain.exit_code == 0 and tagged.exit_code == 0, plain.output + tagged.output
    from PIL import Image

    a, b = (np.asarray(Image.open(tmp_path / f), dtype=np.int16) for f in ("plain.png", "t.png"))
    assert np.abs(a - b).max() > 0
    # The PNG keeps the prompt as written, tag included, and the LoRA's hash as A1111 writes it.
    parameters = Image.open(tmp_path / "t.png").info["parameters"]
    assert parameters.startswith("an otter <lora:style>\n")
    assert 'Lora hashes: "style: ' in parameters
    missing = runner.invoke(app, [*args, "an otter <lora:nope>", "-o", str(tmp_path / "n.png")])
    assert missing.exit_code != 0 and "LoRA 'nope' not found" in missing.output
    assert "Traceback" not in missing.output

    with serve_in_process(ServeSpec(models=models_dir, in_process=True), tmp_path / "srv") as srv:
        body = {"model": "tiny", "size": "64x64", "response_format": "b64_json"}
        ok = srv.post("/v1/images/generations", {**body, "prompt": "an otter <lora:style:1>"})
        assert ok.status_code == 200, ok.text
        assert b64_image(ok.json()["data"][0]["b64_json"]).size == (64, 64)
        bad = srv.post("/v1/images/generations", {**body, "prompt": "an otter <lora:stile:1>"})
        message = assert_openai_error(bad, 400)["message"]
        assert "LoRA 'stile' not found" in message and "style" in message


class FakePipe:
    """Records the adapter calls PromptLoras makes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.adapters: list[str] = []

    def load_lora_weights(self, folder: str, weight_name: str, adapter_name: str) -> None:
        self.calls.append(("load", weight_name))
        self.adapters.append(adapter_name)

    def get_list_adapters(self) -> dict[str, list[str]]:
        return {"unet": list(self.adapters)}

    def enable_lora(self) -> None:
        self.calls.append(("enable", None))

    def disable_lora(self) -> None:
        self.calls.append(("disable", None))

    def set_adapters(self, names: list[str], adapter_weights: list[float]) -> None:
        self.calls.append(("set", dict(zip(names, adapter_weights, strict=True))))


def test_adapters_are_reset_when_the_call_fails_or_is_cancelled(tmp_path: Path) -> None:
    from localimg.backends.diffusers.load.lora_adapters import PromptLoras

    (tmp_path / "a.safetensors").write_bytes(b"")
    pipe = FakePipe()
    loras = PromptLoras({"lora0": 0.5}, tmp_path)
    request = ImageRequest("x <lora:a:2> <lora:a:0.5>", negative_prompt="<lora:a:-1> blur")
    with pytest.raises(RuntimeError), loras.applied(pipe, [request]) as plain:
        assert (plain[0].prompt, plain[0].negative_prompt) == ("x", "blur")
        raise RuntimeError("cancelled")
    assert pipe.calls == [
        ("load", "a.safetensors"),
        ("enable", None),
        ("set", {"lora0": 0.5, "tag0": 1.5}),
        ("set", {"lora0": 0.5}),  # the YAML's alone again
    ]
    other = ImageRequest("y <lora:b:1>")
    with (
        pytest.raises(InvalidRequest, match="different LoRA tags"),
        loras.applied(pipe, [request, other]),
    ):
        pass
