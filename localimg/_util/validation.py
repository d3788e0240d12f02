"""Pydantic validation errors in words: the one format every part shows (YAML keys, options,
request bodies), so a user reads the same kind of message wherever the bad value came in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError


@dataclass(frozen=True)
class Problem:
    """One failed field: where it is (dotted), what is wrong, what was given."""

    key: str
    message: str
    given: Any
    kind: str  # pydantic's error type, e.g. "extra_forbidden"

    def describe(self, key_label: str = "{key}") -> str:
        """`step: Input should be ... (got 0)`; a mapping's content is not repeated.

        `key_label` shapes the key (`"key '{key}'"` for YAML files)."""
        shown = f" (got {self.given!r})" if not isinstance(self.given, dict) else ""
        return f"{key_label.format(key=self.key)}: {self.message}{shown}"


def problems(exc: ValidationError, prefix: str = "") -> list[Problem]:
    """Each error of `exc`, its key dotted and prefixed (`options.dtype`), message cleaned."""
    found = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        found.append(
            Problem(
                key=f"{prefix}{key}",
                message=str(err["msg"]).removeprefix("Value error, "),
                given=err.get("input"),
                kind=str(err["type"]),
            )
        )
    return found


def first_problem(exc: ValidationError, prefix: str = "") -> Problem:
    return problems(exc, prefix)[0]
