"""GET /openapi.json: a valid OpenAPI document of every route, with the routes' own models."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from openapi_spec_validator import validate
from starlette.routing import BaseRoute, Mount, Route
from starlette.testclient import TestClient

from localimg.engine import Engine, EngineSettings
from localimg.server.app import ServerSettings, create_app
from localimg.server.openai.schemas import GenerationBody

KEY = "sk-docs"


def walk(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    for route in routes:
        if isinstance(route, Mount):
            yield from walk(list(route.routes), prefix + route.path)
        elif isinstance(route, Route) and route.include_in_schema:
            for method in route.methods or {"GET"}:
                if method != "HEAD":
                    path = re.sub(r"{(\w+):\w+}", r"{\1}", prefix + route.path)
                    yield method.lower(), path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict]]:
    root = tmp_path_factory.mktemp("openapi")
    (root / "models").mkdir()
    engine = Engine(EngineSettings(models_path=root / "models"))
    app = create_app(ServerSettings(api_keys=(KEY,), output_dir=root / "out"), engine)
    with TestClient(app) as client:
        response = client.get("/openapi.json")  # public: no key
        assert response.status_code == 200, response.text
        yield client, response.json()


def test_the_document_is_valid_openapi(served: tuple[TestClient, dict]) -> None:
    _, document = served
    validate(document)
    assert document["openapi"].startswith("3.")


def test_every_route_is_described(served: tuple[TestClient, dict]) -> None:
    client, document = served
    routes = set(walk(list(client.app.routes)))  # type: ignore[attr-defined]
    described = {(m, p) for p, ops in document["paths"].items() for m in ops}
    assert routes - described == set()
    for family in ("/v1/images/generations", "/v1/images/jobs", "/v1/videos", "/v1/models"):
        assert family in document["paths"]
    for family in ("/sdapi/v1/txt2img", "/models/apply", "/healthz", "/readyz", "/metrics"):
        assert family in document["paths"]
    get_job = document["paths"]["/v1/images/jobs/{job_id}"]["get"]
    assert get_job["parameters"][0]["name"] == "job_id"
    assert get_job["summary"] == "GET /v1/images/jobs/{id}[?preview=true]."


def schema_of(document: dict, operation: dict[str, Any], kind: str) -> dict[str, Any]:
    ref = operation["requestBody"]["content"][kind]["schema"]
    if "allOf" in ref:
        ref = ref["allOf"][0]
    name = ref["$ref"].rsplit("/", 1)[1]
    schema: dict[str, Any] = document["components"]["schemas"][name]
    return schema


def test_bodies_are_the_routes_own_models(served: tuple[TestClient, dict]) -> None:
    _, document = served
    paths = document["paths"]
    generations = schema_of(document, paths["/v1/images/generations"]["post"], "application/json")
    assert {"prompt", "n", "size"} <= set(generations["properties"])
    assert set(generations["properties"]) == set(GenerationBody.model_fields)
    assert generations["properties"]["n"]["maximum"] >= 1
    edits = paths["/v1/images/edits"]["post"]["requestBody"]["content"]["multipart/form-data"]
    files = edits["schema"]["allOf"][1]["properties"]
    assert files["image"] == {"type": "string", "format": "binary"} and "mask" in files
    job = paths["/v1/images/jobs"]["post"]["requestBody"]["content"]
    assert set(job) == {"application/json", "multipart/form-data"}
    assert (
        "previews"
        in schema_of(document, paths["/v1/images/jobs"]["post"], "application/json")["properties"]
    )
    txt2img = schema_of(document, paths["/sdapi/v1/txt2img"]["post"], "application/json")
    assert {"prompt", "steps", "sampler_name"} <= set(txt2img["properties"])
    video = schema_of(document, paths["/v1/videos"]["post"], "application/json")
    assert {"prompt", "seconds", "input_reference"} <= set(video["properties"])


def test_errors_have_each_familys_shape(served: tuple[TestClient, dict]) -> None:
    _, document = served

    def error_schema(path: str, method: str) -> str:
        response = document["paths"][path][method]["responses"]["401"]
        ref: str = response["content"]["application/json"]["schema"]["$ref"]
        return ref.rsplit("/", 1)[1]

    assert error_schema("/v1/images/generations", "post") == "OpenAIError"
    assert error_schema("/models/apply", "post") == "OpenAIError"
    assert error_schema("/sdapi/v1/txt2img", "post") == "A1111ErrorBody"
    assert error_schema("/sdapi/v1/options", "get") == "A1111ErrorBody"
    a1111 = document["components"]["schemas"]["A1111ErrorBody"]["properties"]
    assert set(a1111) == {"error", "detail", "body", "errors"}
