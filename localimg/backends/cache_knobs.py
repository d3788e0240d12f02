"""Step-cache knobs, as both backends check them: each method's knobs are a strict pydantic model,
and a request's knobs are typed against it, or refused naming every knob the method takes with
its default. The backends own their tables (which methods, which knobs); this is the one place
the lookup and the wording live."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from localimg._util.validation import first_problem
from localimg.errors import InvalidRequest

ModelT = TypeVar("ModelT", bound=BaseModel)


def knob_model(table: Mapping[str, type[ModelT]], method: str, backend: str) -> type[ModelT]:
    """The knob model of a method the backend knows, else an error naming them all."""
    model = table.get(method)
    if model is None:
        raise InvalidRequest(
            f"unknown cache method {method!r} for the {backend} backend; it knows "
            f"{', '.join(table)} (none turns caching off)",
            param="cache",
        )
    return model


def knob_list(model: type[BaseModel]) -> str:
    """`threshold (0.05), ...`: each knob of a method with its default, for messages and docs."""
    return ", ".join(f"{name} ({field.default!r})" for name, field in model.model_fields.items())


def parse_knobs(
    table: Mapping[str, type[ModelT]],
    method: str,
    knobs: Mapping[str, Any],
    backend: str,
    inert: Mapping[str, str] | None = None,
) -> ModelT:
    """The method's knobs typed and checked; an unknown knob (with why, when the library reads it
    but never applies it: `inert`) or a bad value is refused naming what the method takes."""
    model = knob_model(table, method, backend)
    for key in knobs:
        if key not in model.model_fields:
            why = f" ({inert[key]})" if inert and key in inert else ""
            raise InvalidRequest(
                f"{method} has no knob {key!r}{why}; its knobs (defaults): {knob_list(model)}",
                param="cache",
            )
    try:
        return model.model_validate(dict(knobs))
    except ValidationError as exc:
        problem = first_problem(exc)
        what = problem.message if problem.key == "(top level)" else problem.describe()
        raise InvalidRequest(
            f"{method}: {what}; its knobs (defaults): {knob_list(model)}", param="cache"
        ) from None
