"""Every route needs the API key unless it is on the short public list (http/keys.py).

The routes are walked from the app itself (Mounts included), so a route added later is covered
without anyone listing it here: without the key it answers 401 in its family's shape before
touching the engine; a public one answers something else. In-process (TestClient), no model.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.routing import BaseRoute, Mount, Route
from starlette.testclient import TestClient

from localimg.engine import Engine, EngineSettings
from localimg.server.app import ServerSettings, create_app

KEY = "sk-walk"
PUBLIC = {
    *("/", "/healthz", "/readyz", "/openapi.json"),
    *("/ui/{name}", "/ui/samplers", "/generated/{name}"),
}
# A value for each path parameter that reaches the route (a static file's name, say).
SAMPLE_PARAMS = {"name": "app.js", "rest": "nothing/here", "model": "tiny"}


def walk(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(method, path template) of every route, Mounts recursed into."""
    for route in routes:
        if isinstance(route, Mount):
            yield from walk(list(route.routes), prefix + route.path)
        elif isinstance(route, Route):
            for method in sorted(route.methods or {"GET"}):
                yield method, prefix + route.path


def concrete(template: str) -> str:
    return re.sub(r"{(\w+)(?::\w+)?}", lambda m: SAMPLE_PARAMS.get(m.group(1), "x_1"), template)


def make_app(tmp_path: Path, **settings: object) -> TestClient:
    engine = Engine(EngineSettings(models_path=tmp_path / "models"))
    (tmp_path / "models").mkdir(exist_ok=True)
    app = create_app(
        ServerSettings(api_keys=(KEY,), output_dir=tmp_path / "out", **settings),  # type: ignore[arg-type]
        engine,
    )
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with make_app(tmp_path) as client:
        yield client


def test_every_route_but_the_public_ones_needs_the_key(client: TestClient) -> None:
    routes = sorted(set(walk(list(client.app.routes))))  # type: ignore[attr-defined]
    assert len(routes) > 40  # the walk found the families (openai, jobs, a1111, localai, ...)
    for method, template in routes:
        response = client.request(method, concrete(template))
        if template in PUBLIC:
            assert response.status_code != 401, (method, template)
            continue
        assert response.status_code == 401, (method, template, response.text)
        if template.startswith(("/sdapi/", "/controlnet/")):  # A1111 and its ControlNet API
            assert response.headers["www-authenticate"] == "Basic"
            if method != "HEAD":  # Starlette adds HEAD to every GET route; it has no body
                assert response.json()["detail"] == "Incorrect username or password", template
        else:
            assert response.headers["www-authenticate"] == "Bearer"
            if method != "HEAD":
                assert response.json()["error"]["code"] == "invalid_api_key", template


def test_the_public_list_is_short_and_exact(client: TestClient) -> None:
    """Anything under the page's /ui prefix is open (bad names are the page's 404), one segment
    under /generated, and every other path needs the key, unknown ones too."""
    assert client.get("/ui/app.js").status_code == 200
    assert client.get("/ui/samplers").status_code == 200
    assert client.get("/ui/..%2Fweb_page.py").status_code == 404
    assert client.get("/generated/nothing.png").status_code == 404
    assert client.get("/generated/a/b.png").status_code == 401
    assert client.get("/no/such/route").status_code == 401
    assert client.get("/healthz/extra").status_code == 401
    assert client.get("/uix").status_code == 401


def test_preflights_pass_without_the_key(tmp_path: Path) -> None:
    origin = "http://page.example"
    with make_app(tmp_path, cors_origins=(origin,)) as client:
        for path in ("/v1/images/generations", "/sdapi/v1/txt2img", "/models/apply", "/metrics"):
            response = client.options(
                path,
                headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
            )
            assert response.status_code == 200, path
            assert response.headers["access-control-allow-origin"] == origin


def test_public_metrics_opens_only_metrics(tmp_path: Path) -> None:
    with make_app(tmp_path, public_metrics=True) as client:
        assert client.get("/metrics").status_code == 200
        assert client.get("/v1/models").status_code == 401
