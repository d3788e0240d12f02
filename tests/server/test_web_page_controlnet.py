"""The web page's ControlNet section in a real browser: a control image picked, a ControlNet from
the list, the strength slider; the request body the page sends carries the OpenAI-style fields,
and the server runs the tiny ControlNet with them."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.server.web_page_support import chromium, data_url_image
from tests.support.conditioned_fixtures import png_bytes
from tests.support.served import Served, ServeSpec
from tests.support.server_support import wait_until, write_model

pytestmark = pytest.mark.slow
WAIT = 180_000  # ms: a readiness limit (the first job loads the model), not a timing assertion


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def serve_spec(tmp_path_factory: pytest.TempPathFactory, tiny_sd: Path) -> ServeSpec:
    """`tiny` with the tiny SD ControlNet installed as controlnet/canny-sd."""
    from tests.support.tiny_controlnets import tiny_sd_controlnet_path

    folder = tmp_path_factory.mktemp("page-controlnet-models")
    write_model(folder, "tiny", tiny_sd)
    (folder / "controlnet").mkdir()
    (folder / "controlnet" / "canny-sd").symlink_to(tiny_sd_controlnet_path())
    return ServeSpec(models=folder, engine={"max_queue": 4}, server={"url_ttl": 600})


@pytest.fixture
def page(browser: Any, served: Served) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.goto(served.url + "/")
    opened.locator("#model option[value='tiny']").wait_for(state="attached", timeout=WAIT)
    opened.select_option("#model", "tiny")
    yield opened
    context.close()


def control_map() -> Image.Image:
    image = Image.new("RGB", (64, 64), (0, 0, 0))
    image.paste((255, 255, 255), (16, 16, 48, 48))
    return image


def test_a_control_image_is_sent_with_the_controlnet_fields(
    page: Any, served: Served, tmp_path: Path
) -> None:
    path = tmp_path / "edges.png"
    path.write_bytes(png_bytes(control_map()))
    page.get_by_label("Prompt", exact=True).fill("a house")
    for name, value in {"width": "64", "height": "64", "steps": "2", "seed": "5"}.items():
        page.fill(f"#{name}", value)
    page.click("#control-section summary")
    page.set_input_files("#control-image", str(path))
    page.locator("#control-net option[value='canny-sd']").wait_for(state="attached", timeout=WAIT)
    page.select_option("#control-net", "canny-sd")
    page.locator("#control-strength").evaluate(
        "e => { e.value = '1.5'; e.dispatchEvent(new Event('input', {bubbles: true})); }"
    )
    assert page.inner_text("#control-strength-value") == "1.50"
    assert page.locator("#control-preview img").count() == 1

    def is_job(request: Any) -> bool:
        return request.method == "POST" and request.url.endswith("/v1/images/jobs")

    before = len(served.image_jobs())
    with page.expect_request(is_job, timeout=WAIT) as sent:
        page.get_by_role("button", name="Generate").click()
    body = sent.value.post_data_json
    assert body["control_net"] == "canny-sd" and body["control_strength"] == 1.5
    assert "control_preprocess" not in body  # "none": the image already is a control map
    header, _, payload = body["control_image"].partition(",")
    assert header == "data:image/png;base64"
    assert Image.open(io.BytesIO(base64.b64decode(payload))).getpixel((32, 32)) == (255, 255, 255)

    wait_until(lambda: len(served.image_jobs()) > before, timeout=WAIT / 1000, what="the job")
    job_id = served.image_jobs()[-1].id
    page.locator(f"#current[data-job='{job_id}'] img.result").first.wait_for(timeout=WAIT)
    (unit,) = served.submitted[-1].request.controls
    assert (unit.net, unit.strength) == ("canny-sd", 1.5)
    src = page.get_attribute("#current img.result", "src")
    assert data_url_image(src).size == (64, 64)


def test_without_a_control_image_no_control_field_is_sent(page: Any, served: Served) -> None:
    page.get_by_label("Prompt", exact=True).fill("a house")
    page.click("#control-section summary")
    page.locator("#control-strength").evaluate(
        "e => { e.value = '0.5'; e.dispatchEvent(new Event('input', {bubbles: true})); }"
    )

    def is_job(request: Any) -> bool:
        return request.method == "POST" and request.url.endswith("/v1/images/jobs")

    with page.expect_request(is_job, timeout=WAIT) as sent:
        page.get_by_role("button", name="Generate").click()
    assert not [key for key in sent.value.post_data_json if key.startswith("control_")]
