"""`localimg run <family entry>` from the shipped gallery, end to end, with the hub faked.

The shipped entries name the real hub repos (Tongyi-MAI/Z-Image-Turbo, ...). A fake hub serves
the test suite's tiny random pipeline of the same family under that repo id, so `run` goes
through the real path a user's first command takes: the shipped index, the install (the hub
snapshot into the cache, the YAML written), loading the family's pipeline class and generating.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from localimg.cli import app
from tests.support.fake_hosts import FakeHosts
from tests.support.tiny_families import TinyFamily


@pytest.mark.parametrize(
    "entry,repo,fixture",
    [
        ("z-image-turbo", "Tongyi-MAI/Z-Image-Turbo", "tiny_z_image"),
        ("flux.2-klein-4b", "black-forest-labs/FLUX.2-klein-4B", "tiny_flux2_klein"),
    ],
)
def test_run_a_family_entry_installs_and_makes_an_image(
    hub: FakeHosts,
    tmp_path: Path,
    tiny_family: TinyFamily,
    monkeypatch: pytest.MonkeyPatch,
    entry: str,
    repo: str,
    fixture: str,
) -> None:
    # The entry declares the real model's memory (22 GB for Z-Image-Turbo in bfloat16); the test
    # machine's free RAM is not what this test is about, the tiny pipeline needs little.
    monkeypatch.setattr("localimg.engine.memory.available_ram", lambda: 256 * 1024**3)
    # huggingface_hub reads HF_ENDPOINT once, at import: point its constants at the fake hub as
    # a user's HF_ENDPOINT set before starting localimg would.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(
        constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        hub.url + "/{repo_id}/resolve/{revision}/{filename}",
    )
    hub.add_repo_folder(repo, tiny_family(fixture.removeprefix("tiny_")))
    models = tmp_path / "models"
    outputs: list[np.ndarray] = []
    for seed in ("3", "3", "4"):
        output = tmp_path / f"out-{len(outputs)}.png"
        result = CliRunner().invoke(
            app,
            [
                "run",
                entry,
                "--prompt",
                "a red fox in the snow",
                "-o",
                str(output),
                "--size",
                "64x64",
                "--steps",
                "2",
                "--seed",
                seed,
                "--models-path",
                str(models),
            ],
        )
        assert result.exit_code == 0, result.output
        with Image.open(output) as image:
            assert image.size == (64, 64)
            outputs.append(np.asarray(image.convert("RGB")))
    assert (models / f"{entry}.yaml").is_file()
    assert np.array_equal(outputs[0], outputs[1])
    assert not np.array_equal(outputs[0], outputs[2])
