"""`GET /openapi.json`: an OpenAPI 3.1 description of every route, generated from the app itself.

Nothing here is written per route: the paths and methods come from walking the app's routes
(Starlette's schema generator does the walk, Mounts included), the summary and description from
each endpoint's docstring, and the bodies from the pydantic models the routes already validate
with (`model_json_schema`, all in `components/schemas`), so the document cannot drift from what
the server accepts. A route names its models with `describe(...)`; one that does not is still
listed, with its path parameters and its family's 401/4xx error shape (OpenAI's error object,
A1111's for /sdapi). Public like /healthz: client generators fetch it before they hold a key.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.schemas import BaseSchemaGenerator

from localimg import __version__

ATTRIBUTE = "openapi_doc"
REF = "#/components/schemas/{model}"
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(BaseModel):
    """OpenAI's error object: every route but A1111's answers its errors in this shape."""

    error: OpenAIErrorDetail


@dataclass(frozen=True)
class Doc:
    """What a route accepts and answers, beyond what its path and docstring say."""

    body: type[BaseModel] | None = None  # a JSON body
    form: type[BaseModel] | None = None  # the text fields of a multipart body
    files: tuple[str, ...] = ()  # the file fields of that multipart body
    response: type[BaseModel] | None = None  # the main (200) answer
    error: type[BaseModel] = OpenAIError  # the family's error shape (401 and other 4xx)


def describe(**fields: Any) -> Callable[[Endpoint], Endpoint]:
    """Decorate an endpoint with its Doc (the fields of `Doc`)."""

    def mark(endpoint: Endpoint) -> Endpoint:
        setattr(endpoint, ATTRIBUTE, Doc(**fields))
        return endpoint

    return mark


def doc_of(endpoint: Callable[..., Any]) -> Doc:
    doc = getattr(endpoint, ATTRIBUTE, None)
    return doc if isinstance(doc, Doc) else Doc()


def with_error(endpoint: Endpoint, error: type[BaseModel]) -> Endpoint:
    """Set the error shape of an endpoint's Doc (a family's wrapper, e.g. A1111's)."""
    setattr(endpoint, ATTRIBUTE, replace(doc_of(endpoint), error=error))
    return endpoint


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _content(doc: Doc) -> dict[str, Any]:
    content: dict[str, Any] = {}
    if doc.body is not None:
        content["application/json"] = {"schema": _ref(doc.body)}
    if doc.form is not None or doc.files:
        binary = {"type": "string", "format": "binary"}
        files = {"type": "object", "properties": {name: binary for name in doc.files}}
        parts = [_ref(doc.form)] if doc.form is not None else []
        content["multipart/form-data"] = {"schema": {"allOf": [*parts, files]}}
    return content


def _operation(path: str, method: str, endpoint: Callable[..., Any]) -> dict[str, Any]:
    doc = doc_of(endpoint)
    text = inspect.getdoc(endpoint) or f"{method.upper()} {path}"
    summary, _, description = text.partition("\n")
    ok: dict[str, Any] = {"description": "OK"}
    if doc.response is not None:
        ok["content"] = {"application/json": {"schema": _ref(doc.response)}}
    error = {"content": {"application/json": {"schema": _ref(doc.error)}}}
    operation: dict[str, Any] = {
        "operationId": re.sub(r"[^A-Za-z0-9]+", "_", f"{method}_{path}").strip("_"),
        "summary": summary.strip(),
        "responses": {
            "200": ok,
            "401": {"description": "Missing or wrong API key", **error},
            "4XX": {"description": "A refused request", **error},
        },
    }
    if description.strip():
        operation["description"] = description.strip()
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", path)
    ]
    if parameters:
        operation["parameters"] = parameters
    content = _content(doc)
    if content:
        operation["requestBody"] = {"required": True, "content": content}
    return operation


class OpenAPIGenerator(BaseSchemaGenerator):
    """The document for a list of routes (`get_schema`)."""

    def get_schema(self, routes: list[BaseRoute]) -> dict[str, Any]:
        paths: dict[str, dict[str, Any]] = {}
        models: set[type[BaseModel]] = set()
        for endpoint in self.get_endpoints(routes):
            doc = doc_of(endpoint.func)
            models.update(m for m in (doc.body, doc.form, doc.response, doc.error) if m)
            paths.setdefault(endpoint.path, {})[endpoint.http_method] = _operation(
                endpoint.path, endpoint.http_method, endpoint.func
            )
        ordered = sorted(models, key=lambda m: m.__name__)
        _, schemas = models_json_schema([(m, "validation") for m in ordered], ref_template=REF)
        return {
            "openapi": "3.1.0",
            "info": {"title": "localimg", "version": __version__},
            "paths": dict(sorted(paths.items())),
            "components": {"schemas": schemas.get("$defs", {})},
        }


async def openapi_json(request: Request) -> Response:
    """The OpenAPI 3.1 description of this server's routes."""
    return JSONResponse(OpenAPIGenerator().get_schema(list(request.app.routes)))


def routes() -> list[Route]:
    return [Route("/openapi.json", openapi_json, methods=["GET"])]
