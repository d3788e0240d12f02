"""The A1111 prompt-weight parser: A1111's parse_prompt_attention results, never an error."""

from __future__ import annotations

import pytest

from localimg.prompts import a1111
from localimg.prompts.a1111 import Fragment


def pairs(prompt: str) -> list[tuple[str, float]]:
    return [
        (f.text, round(f.weight, 4)) if not f.is_break else ("BREAK", -1)
        for f in a1111.parse(prompt)
    ]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("normal text", [("normal text", 1.0)]),
        ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
        ("(unbalanced", [("unbalanced", 1.1)]),
        ("\\(literal\\]", [("(literal]", 1.0)]),
        ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
        (
            "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
            [
                ("a ", 1.0),
                ("house", 1.5730),
                (" ", 1.1),
                ("on", 1.0),
                (" a ", 1.1),
                ("hill", 0.55),
                (", sun, ", 1.1),
                ("sky", 1.4641),
                (".", 1.1),
            ],
        ),
        ("((word))", [("word", 1.21)]),
        ("[word]", [("word", round(1 / 1.1, 4))]),
        ("(word:1.3)", [("word", 1.3)]),
        ("(word:abc)", [("word:abc", 1.1)]),
        ("word)", [("word)", 1.0)]),
        ("word]", [("word]", 1.0)]),
        ("(word:1.2.3)", [("word:1.2.3", 1.1)]),
        ("a :1.3) b", [("a :1.3) b", 1.0)]),
        ("", [("", 1.0)]),
        ("a BREAK b", [("a", 1.0), ("BREAK", -1), ("b", 1.0)]),
        ("a break b", [("a break b", 1.0)]),
        ("<lora:x:0.5> cat", [("<lora:x:0.5> cat", 1.0)]),  # left as text (lora is elsewhere)
    ],
)
def test_parse_matches_a1111(prompt: str, expected: list[tuple[str, float]]) -> None:
    assert pairs(prompt) == expected


def test_chunks_split_at_break() -> None:
    assert a1111.chunks("(a:1.5) BREAK b BREAK") == [
        [Fragment("a", 1.5)],
        [Fragment("b")],
        [Fragment("")],
    ]


@pytest.mark.parametrize(
    ("prompt", "plain"),
    [
        ("(red:1.3) cat", "red cat"),
        ("((big)) [small] dog", "big small dog"),
        ("a BREAK b", "a b"),
        ("\\(x\\)", "(x)"),
        ("(((", ""),
    ],
)
def test_plain_text_keeps_the_words(prompt: str, plain: str) -> None:
    assert a1111.plain_text(prompt) == plain


@pytest.mark.parametrize(
    ("prompt", "syntax"),
    [("a cat, 4k", False), ("a (cat)", True), ("a BREAK b", True), ("a [b", True), ("", False)],
)
def test_has_syntax(prompt: str, syntax: bool) -> None:
    assert a1111.has_syntax(prompt) is syntax


@pytest.mark.parametrize("prompt", ["((((", "))))", "[[(]])", "(:)", "(a:)", ":::", "\\", "(a:-)"])
def test_never_raises(prompt: str) -> None:
    assert a1111.parse(prompt)
