"""The web page's upscaling in a real browser: the "Hires fix" group sends the hires_* fields and
the tiny model's second pass makes the bigger image; the Upscale buttons under a result send it
to /v1/images/upscale and show the bigger image as a new result."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server.web_page_support import chromium, data_url_image
from tests.support.served import Served, ServeSpec
from tests.support.server_support import write_model

pytestmark = pytest.mark.slow
WAIT = 180_000  # ms: a readiness limit (the first job loads the model), not a timing assertion


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def serve_spec(tmp_path_factory: pytest.TempPathFactory, tiny_sd: Path) -> ServeSpec:
    folder = tmp_path_factory.mktemp("page-upscale-models")
    write_model(folder, "tiny", tiny_sd)
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


def fill_small(page: Any) -> None:
    page.get_by_label("Prompt", exact=True).fill("a house")
    for name, value in {"width": "64", "height": "64", "steps": "2", "seed": "5"}.items():
        page.fill(f"#{name}", value)


def is_job(request: Any) -> bool:
    return request.method == "POST" and request.url.endswith("/v1/images/jobs")


def result_size(page: Any) -> tuple[int, int]:
    src = page.get_attribute("#current img.result", "src")
    size: tuple[int, int] = data_url_image(src).size
    return size


def test_the_hires_group_sends_the_hires_fields(page: Any, served: Served) -> None:
    fill_small(page)
    page.click("#hires-section summary")
    page.check("#hires-enabled")
    page.fill("#hires-scale", "2")
    page.locator("#hires-upscaler option[value='lanczos']").wait_for(state="attached", timeout=WAIT)
    assert page.locator("#hires-upscaler option[value='latent']").count() == 1
    page.select_option("#hires-upscaler", "lanczos")
    page.fill("#hires-steps", "2")
    page.fill("#hires-denoise", "0.5")
    with page.expect_request(is_job, timeout=WAIT) as sent:
        page.get_by_role("button", name="Generate").click()
    body = sent.value.post_data_json
    hires = {key: value for key, value in body.items() if key.startswith("hires")}
    assert hires == {
        "hires_scale": 2,
        "hires_upscaler": "lanczos",
        "hires_steps": 2,
        "hires_denoise": 0.5,
    }
    page.locator("#current img.result").first.wait_for(timeout=WAIT)
    assert result_size(page) == (128, 128)
    assert "hires ×2" in page.inner_text("#current figcaption")


def test_without_the_checkbox_no_hires_field_is_sent(page: Any) -> None:
    fill_small(page)
    page.click("#hires-section summary")
    page.fill("#hires-scale", "3")
    with page.expect_request(is_job, timeout=WAIT) as sent:
        page.get_by_role("button", name="Generate").click()
    assert not [key for key in sent.value.post_data_json if key.startswith("hires")]


def test_a_bad_hires_value_is_said_before_sending(page: Any) -> None:
    fill_small(page)
    page.click("#hires-section summary")
    page.check("#hires-enabled")
    page.fill("#hires-denoise", "1.5")
    page.get_by_role("button", name="Generate").click()
    assert "Hires denoise must be above 0 and at most 1" in page.inner_text("#error")


def test_an_upscale_click_shows_an_image_twice_the_size(page: Any, served: Served) -> None:
    fill_small(page)
    page.get_by_role("button", name="Generate").click()
    page.locator("#current img.result").first.wait_for(timeout=WAIT)
    assert result_size(page) == (64, 64)
    page.locator("#current .upscale-upscaler option[value='bicubic']").wait_for(
        state="attached", timeout=WAIT
    )
    page.select_option("#current .upscale-upscaler", "bicubic")

    def is_upscale(response: Any) -> bool:
        sent = response.request
        return bool(sent.method == "POST" and sent.url.endswith("/v1/images/upscale"))

    with page.expect_response(is_upscale, timeout=WAIT) as answered:
        page.get_by_role("button", name="Upscale ×2").click()
    response = answered.value
    assert response.status == 200
    assert "multipart/form-data" in response.request.headers["content-type"]
    assert response.json()["model"] == "bicubic"
    page.wait_for_function(
        "() => document.querySelector('#current figcaption')?.textContent.includes('upscaled')",
        timeout=WAIT,
    )
    assert result_size(page) == (128, 128)
    assert "upscaled ×2 bicubic" in page.inner_text("#current figcaption")
    assert "upscaled ×2 bicubic" in page.inner_text("#history")


def test_use_these_settings_fills_the_hires_group(page: Any) -> None:
    fill_small(page)
    page.click("#hires-section summary")
    page.check("#hires-enabled")
    page.fill("#hires-scale", "1.5")
    page.fill("#hires-denoise", "0.6")  # of 2 steps: at least one denoising step
    page.get_by_role("button", name="Generate").click()
    page.locator("#history .card").first.wait_for(timeout=WAIT)
    page.uncheck("#hires-enabled")
    page.fill("#hires-scale", "3")
    page.get_by_role("button", name="Use these settings").first.click()
    assert page.is_checked("#hires-enabled")
    assert page.input_value("#hires-scale") == "1.5"
    assert page.input_value("#hires-denoise") == "0.6"
