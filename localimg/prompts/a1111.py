"""AUTOMATIC1111's prompt-weight language, parsed the way its `parse_prompt_attention` does.

`(word)` multiplies the weight of its text by 1.1, `((word))` by 1.21, `[word]` divides it by 1.1,
`(word:1.3)` sets a factor of 1.3; `\\(` `\\)` `\\[` `\\]` `\\\\` are the characters themselves and
`BREAK` (upper case, a word of its own) starts a new 75-token chunk. As in A1111 nothing here is
an error: a `)` or `]` without an opener is text, an opener never closed weighs the rest of the
prompt, and `(word:abc)` is the text `word:abc` at 1.1. Engine-neutral: no torch, no tokenizer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ROUND = 1.1
SQUARE = 1 / 1.1

_ATTENTION = re.compile(
    r"""
\\\(|\\\)|\\\[|\\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|\]|[^\\()\[\]:]+|:
""",
    re.X,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)
_SYNTAX = re.compile(r"[()\[\]\\]|\bBREAK\b")


@dataclass(frozen=True)
class Fragment:
    """A run of text and its weight; `BREAK` is the marker `is_break` (text empty)."""

    text: str
    weight: float = 1.0
    is_break: bool = False


def has_syntax(prompt: str | None) -> bool:
    """Whether the prompt uses anything of the language (a bracket, a backslash, BREAK)."""
    return bool(prompt) and _SYNTAX.search(prompt or "") is not None


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse(prompt: str) -> list[Fragment]:
    """The prompt as weighted fragments, equal neighbours merged (A1111's result)."""
    res: list[list[object]] = []  # [text, weight, is_break]
    rounds: list[int] = []
    squares: list[int] = []

    def multiply(start: int, factor: float) -> None:
        for item in res[start:]:
            if not item[2]:
                item[1] = float(item[1]) * factor  # type: ignore[arg-type]

    for match in _ATTENTION.finditer(prompt):
        text, weight = match.group(0), match.group(1)
        factor = _number(weight) if weight is not None else None
        if text.startswith("\\"):
            res.append([text[1:], 1.0, False])
        elif text in "([":
            (rounds if text == "(" else squares).append(len(res))
        elif weight is not None and rounds:
            if factor is None:  # `(word:1.2.3)`: the number is text, `)` closes as usual
                res.append([text[: text.rindex(")")], 1.0, False])
            multiply(rounds.pop(), ROUND if factor is None else factor)
        elif text == ")" and rounds:
            multiply(rounds.pop(), ROUND)
        elif text == "]" and squares:
            multiply(squares.pop(), SQUARE)
        else:
            _append_text(res, text)
    for start in rounds:
        multiply(start, ROUND)
    for start in squares:
        multiply(start, SQUARE)
    return _merged(res)


def _append_text(res: list[list[object]], text: str) -> None:
    for i, part in enumerate(_BREAK.split(text)):
        if i:
            res.append(["", 1.0, True])
        res.append([part, 1.0, False])


def _merged(res: list[list[object]]) -> list[Fragment]:
    out: list[Fragment] = []
    for text, weight, is_break in res:
        assert isinstance(text, str) and isinstance(weight, float) and isinstance(is_break, bool)
        if is_break:
            out.append(Fragment("", 1.0, True))
        elif out and not out[-1].is_break and out[-1].weight == weight:
            out[-1] = Fragment(out[-1].text + text, weight)
        elif text:
            out.append(Fragment(text, weight))
    return out or [Fragment("")]


def chunks(prompt: str) -> list[list[Fragment]]:
    """The fragments between BREAKs (at least one chunk, each at least one fragment)."""
    found: list[list[Fragment]] = [[]]
    for fragment in parse(prompt):
        if fragment.is_break:
            found.append([])
        elif fragment.text:
            found[-1].append(fragment)
    return [chunk or [Fragment("")] for chunk in found]


def plain_text(prompt: str) -> str:
    """The words without the syntax: `(red:1.3) cat BREAK dog` -> `red cat dog`."""
    return " ".join("".join(f.text for f in chunk).strip() for chunk in chunks(prompt)).strip()
