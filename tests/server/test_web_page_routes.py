"""The page's routes without a browser: files, content types, caching, no key needed, --no-ui."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from localimg.server.ui.web_page import sampler_choices
from tests.server.web_page_support import page_server
from tests.support.served import Served, ServeSpec
from tests.support.server_support import assert_openai_error

KEY = "sk-page-test"


@pytest.fixture(scope="module")
def serve_spec(tmp_path_factory: pytest.TempPathFactory) -> ServeSpec:
    """No models, a key; in process, since these routes only read files."""
    models = tmp_path_factory.mktemp("page-routes") / "models"
    models.mkdir()
    return ServeSpec(models=models, server={"api_keys": (KEY,)}, in_process=True)


def test_page_and_assets_are_served_without_the_key(served: Served) -> None:
    page = served.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<label for="prompt">Prompt</label>' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text  # nothing from elsewhere
    kinds = {
        "app.js": "text/javascript",
        "api.js": "text/javascript",
        "history.js": "text/javascript",
        "mask.js": "text/javascript",
        "style.css": "text/css",
        "icon.svg": "image/svg+xml",
    }
    for name, kind in kinds.items():
        response = served.get(f"/ui/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"].startswith(kind), name
        assert response.headers["cache-control"] == "no-cache"
        assert "https://" not in response.text, name
        again = served.get(f"/ui/{name}", headers={"If-None-Match": response.headers["etag"]})
        assert again.status_code == 304 and not again.content
    # The API itself still wants the key.
    assert_openai_error(served.get("/v1/models"), 401)


@pytest.mark.parametrize("name", ["nope.js", "..%2Fweb_page.py", "index.py", ".hidden.js"])
def test_other_names_are_404(served: Served, name: str) -> None:
    assert_openai_error(served.get(f"/ui/{name}"), 404)


def test_samplers_per_engine(served: Served) -> None:
    body = served.get("/ui/samplers", params={"backend": "diffusers"}).json()
    assert body["engine"] == "diffusers"
    values = {s["value"]: s["label"] for s in body["data"]}
    assert values["euler_a"] == "Euler a" and values["k_dpmpp_2m"] == "DPM++ 2M Karras"
    ggml = {s["value"] for s in sampler_choices("stablediffusion-ggml")}
    assert "dpm++2m" in ggml and "euler_a" in ggml and "unipc" not in ggml


def test_no_ui_is_404(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    with page_server(tmp_path, tmp_path / "models", ui=False) as server:
        for path in ("/", "/ui/app.js", "/ui/samplers"):
            assert_openai_error(httpx.get(server.url + path), 404)
        assert httpx.get(server.url + "/healthz").status_code == 200
