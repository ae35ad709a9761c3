"""The package's shape: layers import only the layers below them, no import cycles, and short
functions and modules (or a stated reason).

Every import is read from the source, those inside functions and under ``TYPE_CHECKING``
included, so a lazy import cannot hide a cycle or a layer that reaches up.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "matryoshka"
LEAVES = {
    "_io",
    "_optional",
    "_runtime",
    "_markdown",
}  # leaf helpers: anything may import them, they import nothing
# every layer below the experiments and the command line ("root": matryoshka/__init__.py)
_BELOW_TOP = {"root", "dims", "nn", "models", "data", "train", "eval", "index", "viz"}
# which layers each layer may import (the design notes' layout table); leaves always allowed
ALLOWED = {
    "_io": set(),
    "_optional": set(),
    "_runtime": set(),
    "_markdown": set(),
    "dims": set(),
    "nn": {"dims"},
    "models": {"nn", "dims"},
    "data": set(),
    "train": {"nn", "models", "data", "dims"},
    "eval": {"index", "dims"},
    "index": {"dims"},
    "viz": set(),
    "experiments": _BELOW_TOP,
    "serve": _BELOW_TOP,
    "cli": _BELOW_TOP | {"experiments", "serve"},
    "root": {"dims"},
}
MAX_FUNCTION, MAX_MODULE = 80, 500
EXCEPTION = "Long on purpose:"  # a module docstring line that names an over-long item and why


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = ["matryoshka", *path.relative_to(SRC).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _layer(module: str) -> str:
    parts = module.split(".")
    return "root" if len(parts) == 1 else parts[1]


def _imports(path: Path) -> set[str]:
    """Modules of the package that ``path`` imports anywhere in its body."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "matryoshka"}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("matryoshka"):
            assert node.level == 0, f"{path}: relative import"
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.add(sub if sub in MODULES else node.module)
    return out


GRAPH = {m: _imports(p) for m, p in MODULES.items()}


def test_the_walk_sees_the_package():
    assert len(MODULES) > 40 and "matryoshka.index.ann" in MODULES
    assert all(target in MODULES for targets in GRAPH.values() for target in targets)
    assert "matryoshka.dims" in GRAPH["matryoshka.nn.loss"]  # an import inside the body counts


@pytest.mark.parametrize("module", sorted(MODULES))
def test_layers_import_only_downwards(module):
    layer = _layer(module)
    bad = [
        t for t in GRAPH[module]
        if _layer(t) != layer and _layer(t) not in ALLOWED[layer] | LEAVES
    ]  # fmt: skip
    assert not bad, f"{module} ({layer}) imports {bad}; {layer} may import {sorted(ALLOWED[layer])}"


def test_nothing_imports_the_command_line_or_the_experiments():
    for module, targets in GRAPH.items():
        for top in ("cli", "experiments", "serve"):
            if _layer(module) != top and _layer(module) != "cli":
                assert not [t for t in targets if _layer(t) == top], (module, top)


def test_no_import_cycle():
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(GRAPH[m]):
            if state.get(t) == 1:
                cycle = path[path.index(t) :] + [t] if t in path else [m, t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t, [*path, t])
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [m])


def test_index_stages_do_not_reach_into_the_index():
    text = (SRC / "index" / "ann.py").read_text()
    assert "_store" not in text and "_norm(" not in text and "_norms" not in text
    assert "matryoshka.index.core" not in GRAPH["matryoshka.index.ann"]


def test_no_argparse_below_the_command_line():
    for module, path in MODULES.items():
        if _layer(module) != "cli":
            assert "argparse" not in path.read_text(), module


def _over_long(path: Path) -> list[str]:
    src = path.read_text()
    tree = ast.parse(src)
    found = []
    if len(src.splitlines()) > MAX_MODULE:
        found.append(f"module ({len(src.splitlines())} lines)")
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            if n > MAX_FUNCTION:
                found.append(f"{node.name} ({n} lines)")
    return found


@pytest.mark.parametrize("module", sorted(MODULES))
def test_functions_and_modules_are_short_or_say_why(module):
    path = MODULES[module]
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    reasons = [line for line in doc.splitlines() if line.startswith(EXCEPTION)]
    unexplained = [
        item for item in _over_long(path)
        if not any(item.split(" (")[0] in r for r in reasons)
    ]  # fmt: skip
    assert not unexplained, (
        f"{module}: {unexplained} over {MAX_FUNCTION} lines a function / {MAX_MODULE} a module; "
        f"shorten, or add a line '{EXCEPTION} <name> ...' with the reason to the docstring"
    )


def test_code_speaks_of_the_project_not_of_issues():
    import re

    for module, path in MODULES.items():
        for i, line in enumerate(path.read_text().splitlines(), 1):
            assert not re.search(r"\bthe issue\b|\bissues?\s*#?\d", line, re.I), (module, i)
