"""The package's shape, checked from its source (ast): the rules docs/architecture.md states.

- no import cycle among localimg's modules (function-level imports count: they run too);
- no private name (`_x`) imported from another module;
- each part imports only the parts below it (LAYERS);
- no module over MAX_LINES lines, no function body over MAX_BODY lines;
- at most MAX_TOP modules directly in a package that has subpackages to put them in.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "localimg"
MAX_LINES = 450  # a module past this has two ideas in it
MAX_BODY = 70  # lines from a function's first statement (after its docstring) to its end
MAX_TOP = 12  # modules directly in server/ and backends/diffusers/ (the rest in subpackages)

# Each part and the parts it may import (besides itself). Front ends sit on top; a backend never
# knows HTTP or Typer; the server never touches a backend (it goes through the engine).
# request_parts holds the request's parts (ControlNet units, the hires fix); requests re-exports it.
BASE = {"errors", "requests", "request_parts", "_util"}
LAYERS: dict[str, set[str]] = {
    "errors": set(),
    "request_parts": {"errors"},
    "requests": {"errors", "request_parts"},
    "_util": {"errors"},
    "media": BASE,
    "download": BASE,
    "config": BASE,
    "prompts": BASE | {"config"},  # prompt languages every engine shares
    "backends": BASE | {"config", "media", "prompts"},
    "gallery": BASE | {"config", "download", "backends"},
    "engine": BASE | {"config", "media", "backends", "prompts"},
    "server": BASE | {"config", "media", "engine", "gallery", "download", "prompts"},
    "ray": BASE | {"config", "media", "engine", "gallery", "download", "server", "prompts"},
    "cli": BASE
    | {"config", "media", "engine", "gallery", "download", "server", "backends", "ray", "prompts"},
    "__main__": {"cli"},
}


def module_name(path: Path) -> str:
    parts = ["localimg", *path.relative_to(ROOT).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def imports_of(name: str) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every localimg import in a module."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    found: list[tuple[str, list[str], int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("localimg"):
                    found.append((alias.name, [], node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            if not base.startswith("localimg"):
                continue
            names = [a.name for a in node.names]
            # `from pkg import submodule` imports the submodule itself.
            subs = [n for n in names if f"{base}.{n}" in MODULES]
            for sub in subs:
                found.append((f"{base}.{sub}", [], node.lineno))
            rest = [n for n in names if n not in subs]
            if rest or not subs:
                found.append((base, rest, node.lineno))
    return found


def part_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def graph() -> dict[str, set[str]]:
    return {
        name: {target for target, _, _ in imports_of(name) if target in MODULES and target != name}
        for name in MODULES
    }


def test_every_module_is_seen() -> None:
    assert "localimg.engine.engine" in MODULES
    assert "localimg.backends.base" in MODULES
    assert len(MODULES) > 40


def test_no_import_cycles() -> None:
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_private_name_is_imported_from_another_module() -> None:
    offenders = [
        f"{name}:{line} imports {target}.{imported}"
        for name in MODULES
        for target, names, line in imports_of(name)
        for imported in names
        if imported.startswith("_") and not imported.startswith("__")
    ]
    assert not offenders, "\n".join(offenders)


def test_each_part_imports_only_the_parts_below_it() -> None:
    offenders = []
    for name in MODULES:
        part = part_of(name)
        if part not in LAYERS:
            continue
        allowed = LAYERS[part] | {part}
        for target, _, line in imports_of(name):
            other = part_of(target)
            if other and other not in allowed and other != "__init__":
                offenders.append(f"{name}:{line} imports {target} ({part} may not use {other})")
    assert not offenders, "\n".join(offenders)


def test_every_part_has_a_layer() -> None:
    parts = {part_of(name) for name in MODULES} - {""}
    assert parts <= set(LAYERS), f"parts without a layer rule: {parts - set(LAYERS)}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_is_not_too_long(name: str) -> None:
    lines = MODULES[name].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{name} has {lines} lines (limit {MAX_LINES}): split it"


def test_every_package_is_shipped() -> None:
    """pyproject lists packages by hand (the gallery data needs a package-dir mapping)."""
    import tomllib

    pyproject = tomllib.loads((ROOT.parent / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(pyproject["tool"]["setuptools"]["packages"])
    packages = {module_name(p) for p in ROOT.rglob("__init__.py")}
    assert packages <= listed, f"add to pyproject packages: {sorted(packages - listed)}"


def body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """A function's length from its first statement after the docstring to its last line."""
    body = node.body
    first = body[0]
    docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
    start = body[1].lineno if docstring and len(body) > 1 else first.lineno
    return (node.end_lineno or start) - start + 1


def test_no_function_body_is_too_long() -> None:
    offenders = []
    for name, path in sorted(MODULES.items()):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = body_lines(node)
                if length > MAX_BODY:
                    offenders.append(f"{name}:{node.lineno} {node.name} has {length} lines")
    assert not offenders, f"function bodies over {MAX_BODY} lines:\n" + "\n".join(offenders)


@pytest.mark.parametrize("package", ["server", "backends/diffusers"])
def test_crowded_packages_keep_few_modules_at_their_top(package: str) -> None:
    top = sorted(p.name for p in (ROOT / package).glob("*.py") if p.name != "__init__.py")
    assert len(top) <= MAX_TOP, f"{package}/ has {len(top)} modules at its top: {top}"
