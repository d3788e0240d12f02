"""The web page in a real browser (Debian's chromium under Playwright) against a real server with
the tiny diffusers model: generate, previews and cancel, errors in words, the model picker,
history across reloads, inpainting with a painted mask, and the API key.

One browser and one server for the module; each test has its own browser context (its own
localStorage). Waits are on what the page shows, never on time.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.server.web_page_support import (
    chromium,
    data_url_image,
    page_server,
    pixels,
    watch_requests,
)
from tests.support.conditioned_fixtures import noise_image, png_bytes
from tests.support.served import Served, ServeSpec
from tests.support.server_support import wait_until, write_model

pytestmark = pytest.mark.slow
WAIT = 180_000  # ms: a readiness limit (the first job loads the model), not a timing assertion
KEY = "sk-page-key"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tiny_sd: Path) -> Path:
    folder = tmp_path_factory.mktemp("page-models")
    write_model(folder, "tiny", tiny_sd)
    write_model(folder, "second", tiny_sd)
    # for the LoRA and embedding picker: a listed LoRA, an embedding that fits the tiny model
    import torch
    from safetensors.torch import save_file

    (folder / "loras").mkdir()
    save_file({"x": torch.zeros(1)}, str(folder / "loras" / "detail.safetensors"))
    (folder / "embeddings").mkdir()
    embedding = {"emb_params": torch.zeros(1, 32)}
    save_file(embedding, str(folder / "embeddings" / "tinystyle.safetensors"))
    return folder


@pytest.fixture(scope="module")
def serve_spec(models: Path) -> ServeSpec:
    """The page's server: `tiny` and `second` in process (quick to start)."""
    return ServeSpec(models=models, engine={"max_queue": 4}, server={"url_ttl": 600})


@pytest.fixture
def page(browser: Any, served: Served) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.goto(served.url + "/")
    opened.locator("#model option[value='tiny']").wait_for(state="attached", timeout=WAIT)
    opened.select_option("#model", "tiny")
    yield opened
    context.close()


def fill(page: Any, **fields: str) -> None:
    for name, value in fields.items():
        page.fill(f"#{name}", value)


def generate(page: Any, served: Served, press: str | None = None) -> list[Any]:
    """Press Generate (or `press` in the prompt), wait for that job's images, return them."""
    before = len(served.image_jobs())
    if press:
        page.get_by_label("Prompt", exact=True).press(press)
    else:
        page.get_by_role("button", name="Generate").click()
    wait_until(lambda: len(served.image_jobs()) > before, timeout=WAIT / 1000, what="the job")
    job_id = served.image_jobs()[-1].id
    shown = page.locator(f"#current[data-job='{job_id}'] img.result")
    shown.first.wait_for(timeout=WAIT)
    sources = page.eval_on_selector_all("#current img.result", "els => els.map(e => e.src)")
    return [data_url_image(src) for src in sources]


def error_text(page: Any) -> str:
    page.locator("#error:not([hidden])").wait_for(timeout=WAIT)
    return str(page.inner_text("#error"))


# -- generate ------------------------------------------------------------------------------------


def test_generate_size_seed_and_alt_text(page: Any, served: Served) -> None:
    foreign = watch_requests(page, served.url)
    page.get_by_label("Prompt", exact=True).fill("a red barn")
    fill(page, width="64", height="96", steps="2", seed="5", negative="fog")
    (image,) = generate(page, served)
    assert image.size == (64, 96)
    values = pixels(image)
    assert values.std() > 10  # a generated picture, not a flat fill
    alt = page.get_attribute("#current img.result", "alt")
    assert alt.startswith("a red barn") and "seed 5" in alt
    assert "Done: 1 image, 64x96, seed 5" in page.inner_text("#status-text")
    job = served.image_jobs()[-1]
    assert job.result["size"] == "64x96" and job.result["data"][0]["seed"] == 5

    # The same seed again: the same picture; another seed: another one.
    (same,) = generate(page, served)
    assert np.array_equal(pixels(same), values)
    page.click("#seed-random")
    assert page.input_value("#seed") == ""
    (other,) = generate(page, served, press="Control+Enter")  # Ctrl+Enter generates
    assert not np.array_equal(pixels(other), values)
    seed = served.image_jobs()[-1].result["data"][0]["seed"]
    page.click("#seed-reuse")
    assert page.input_value("#seed") == str(seed)
    # n: two images, each its own result and history entry.
    fill(page, n="2", seed="9")
    two = generate(page, served)
    assert len(two) == 2 and all(i.size == (64, 96) for i in two)
    assert page.locator("#history li").count() == 5
    assert foreign == []  # nothing fetched from anywhere but the server


def test_model_picker_lists_models_with_backend_and_state(page: Any) -> None:
    options = page.eval_on_selector_all(
        "#model option", "els => els.map(e => [e.value, e.textContent])"
    )
    names = dict(options)
    assert set(names) == {"tiny", "second"}
    assert "diffusers" in names["second"] and "unloaded" in names["second"]
    page.select_option("#model", "second")
    assert "Backend diffusers" in page.inner_text("#model-info")
    samplers = page.eval_on_selector_all("#sampler option", "els => els.map(e => e.value)")
    assert "euler_a" in samplers and "k_dpmpp_2m" in samplers


def test_lora_and_embedding_picker_inserts_into_the_prompt(page: Any) -> None:
    prompt = page.get_by_label("Prompt", exact=True)
    prompt.fill("a red barn")
    page.get_by_role("button", name="LoRAs & embeddings").click()
    page.locator("#extras button", has_text="detail").click(timeout=WAIT)
    page.locator("#extras button", has_text="tinystyle").click()
    assert page.input_value("#prompt") == "a red barn <lora:detail:1> tinystyle"


def test_previews_progress_and_cancel(page: Any, served: Served) -> None:
    page.get_by_label("Prompt", exact=True).fill("a slow one")
    fill(page, width="64", height="64", steps="500", seed="1")
    page.get_by_role("button", name="Generate").click()
    page.locator("#current img.preview").wait_for(timeout=WAIT)  # a live preview
    preview = data_url_image(page.get_attribute("#current img.preview", "src"))
    assert preview.size[0] > 0
    assert re.search(r"Step \d+ of 500", page.inner_text("#status-text"))
    assert int(page.get_attribute("#progress", "value") or 0) >= 0
    page.get_by_role("button", name="Cancel").click()
    page.locator("#status-text", has_text="Cancelled.").wait_for(timeout=WAIT)
    job = served.image_jobs()[-1]
    assert job.status == "cancelled" and job.step < 500
    assert page.locator("#current img").count() == 0
    assert page.is_enabled("#generate") and not page.is_enabled("#cancel")


def test_server_errors_are_shown_in_words(page: Any, served: Served) -> None:
    page.get_by_label("Prompt", exact=True).fill("bad size")
    fill(page, width="100", height="64", steps="2")
    page.get_by_role("button", name="Generate").click()
    shown = error_text(page)
    direct = httpx.post(
        served.url + "/v1/images/jobs",
        json={"model": "tiny", "prompt": "x", "size": "100x64", "steps": 2},
    )
    message = direct.json()["error"]["message"]
    assert "multiple of 8" in message and message in shown and "(400)" in shown
    fill(page, width="64", steps="501")
    page.get_by_role("button", name="Generate").click()
    page.locator("#error", has_text="steps").wait_for(timeout=WAIT)
    assert "500" in page.inner_text("#error")
    page.select_option("#sampler", "k_dpmpp_2m")
    fill(page, steps="2")
    page.eval_on_selector(
        "#sampler", "s => { s.append(new Option('bogus', 'bogus')); s.value = 'bogus'; }"
    )
    page.get_by_role("button", name="Generate").click()
    page.locator("#error", has_text="bogus").wait_for(timeout=WAIT)
    assert "unknown scheduler" in page.inner_text("#error")


# -- history -------------------------------------------------------------------------------------


def test_history_survives_reload_and_fills_the_form(page: Any, served: Served) -> None:
    page.get_by_label("Prompt", exact=True).fill("a kept one")
    fill(page, negative="rain", width="64", height="72", steps="3", cfg="5.5", seed="77")
    page.select_option("#sampler", "euler_a")
    generate(page, served)
    page.reload()
    page.locator("#model option[value='tiny']").wait_for(state="attached", timeout=WAIT)
    card = page.locator("#history li").first
    card.wait_for(timeout=WAIT)
    thumb = card.locator("img")
    assert thumb.get_attribute("alt").startswith("a kept one")
    assert data_url_image(thumb.get_attribute("src")).size == (64, 72)
    assert card.get_by_role("link", name="Download").get_attribute("download") == "localimg-77.png"
    for name in ("prompt", "negative", "width", "height", "steps", "cfg", "seed"):
        page.fill(f"#{name}", "")
    card.get_by_role("button", name="Use these settings").click()
    expected = {"prompt": "a kept one", "negative": "rain", "width": "64", "height": "72"}
    expected |= {"steps": "3", "cfg": "5.5", "seed": "77"}
    for name, value in expected.items():
        assert page.input_value(f"#{name}") == value, name
    page.locator("#sampler option[value='euler_a']").wait_for(state="attached")
    assert page.input_value("#sampler") == "euler_a"
    (again,) = generate(page, served)  # the same settings, the same picture
    assert again.size == (64, 72)
    page.click("#history-clear")
    page.reload()
    page.locator("#history-note", has_text="Results appear here").wait_for(timeout=WAIT)
    assert page.locator("#history li").count() == 0


# -- inpainting ----------------------------------------------------------------------------------


def test_painted_mask_inpaints_only_there(page: Any, served: Served, tmp_path: Path) -> None:
    source = noise_image(64, 64, seed=3)
    path = tmp_path / "in.png"
    path.write_bytes(png_bytes(source))
    page.click("#image-section summary")
    page.set_input_files("#images", str(path))
    stage = page.locator("#mask-paint")
    stage.wait_for(timeout=WAIT)
    stage.evaluate("e => e.scrollIntoView({block: 'center'})")
    box = stage.bounding_box()
    assert box["y"] >= 0 and box["y"] + box["height"] <= 900  # all of it on screen
    page.fill("#brush", "40")
    page.mouse.move(box["x"] + box["width"] * 0.15, box["y"] + 5)
    page.mouse.down()
    for y in range(5, int(box["height"]), 10):
        page.mouse.move(box["x"] + box["width"] * 0.15, box["y"] + y)
    page.mouse.up()
    page.get_by_label("Prompt", exact=True).fill("a patch")
    fill(page, width="", height="", steps="3", seed="4")
    (out,) = generate(page, served)
    assert out.size == (64, 64)
    result, original = pixels(out), pixels(source)
    assert np.abs(result[:, :8] - original[:, :8]).mean() > 10  # painted: changed
    assert np.abs(result[:, 48:] - original[:, 48:]).max() <= 1  # not painted: kept
    assert "edit" in page.inner_text("#current figcaption")


# -- the API key ---------------------------------------------------------------------------------


def test_api_key_is_asked_for_kept_and_forgotten(
    browser: Any, models: Path, tmp_path: Path
) -> None:
    with page_server(tmp_path, models, api_keys=(KEY,)) as server:
        context = browser.new_context()
        page = context.new_page()
        page.goto(server.url + "/")
        dialog = page.get_by_role("dialog")
        dialog.wait_for(timeout=WAIT)
        assert "API key" in dialog.inner_text()
        page.get_by_role("textbox", name="API key").fill("wrong")
        page.get_by_role("button", name="Save key").click()
        page.locator("#key-message", has_text="refused").wait_for(timeout=WAIT)
        page.get_by_role("textbox", name="API key").fill(KEY)
        page.get_by_role("button", name="Save key").click()
        page.locator("#model option[value='tiny']").wait_for(state="attached", timeout=WAIT)
        page.select_option("#model", "tiny")
        page.get_by_label("Prompt", exact=True).fill("behind a key")
        fill(page, width="64", height="64", steps="2")
        (image,) = generate(page, server)
        assert image.size == (64, 64)
        # Kept across a reload; then forgotten, and asked for again.
        page.reload()
        page.locator("#model option[value='tiny']").wait_for(state="attached", timeout=WAIT)
        assert page.inner_text("#server-note") == "API key set"
        page.get_by_role("button", name="API key").click()
        page.get_by_role("button", name="Forget key").click()
        page.reload()
        page.get_by_role("dialog").wait_for(timeout=WAIT)
        page.get_by_role("button", name="Close").click()
        assert "401" in error_text(page)
        context.close()


def test_full_storage_is_reported_and_results_still_shown(page: Any, served: Served) -> None:
    filled = page.evaluate(
        """() => {
            let i = 0;
            let error = null;
            for (const size of [262144, 4096, 64, 1]) {
                const chunk = "x".repeat(size);
                try { for (;;) { localStorage.setItem("junk" + i, chunk); i += 1; } }
                catch (err) { error = err.name; }
            }
            return error;
        }"""
    )
    assert filled == "QuotaExceededError"
    page.get_by_label("Prompt", exact=True).fill("no room")
    fill(page, width="64", height="64", steps="2", seed="3")
    (image,) = generate(page, served)
    assert image.size == (64, 64)
    assert "storage" in page.inner_text("#history-note")
    assert page.locator("#current a", has_text="Download").count() == 1
