"""The layers of docs/architecture.md hold: every import (lazy ones inside functions too) goes down the data flow
or sideways within a layer, the packages import no circle, and no module or function outgrows its limit."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "gdfree"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("gdfree", "gdfree.errors", "gdfree.types", "gdfree.config", "gdfree.devices", "gdfree.io"),
    ("gdfree.arrays",),
    ("gdfree.metrics",),
    ("gdfree.phantom", "gdfree.preprocess"),
    ("gdfree.data",),
    ("gdfree.models",),
    ("gdfree.uncertainty",),
    ("gdfree.train",),
    ("gdfree.infer",),
    ("gdfree.activity",),
    ("gdfree.predict", "gdfree.explain", "gdfree.evaluate"),
    ("gdfree.report",),
    ("gdfree.demo", "gdfree.bench", "gdfree.bench_training", "gdfree.cli", "gdfree.__main__"),
)
"""Bottom to top, as docs/architecture.md draws them; a module may import its own layer and those below."""

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
EXCEPTIONS: dict[str, int] = {
    # the training loop: setup, the step, validation and checkpoints of one run, orchestrating pure functions
    # (STYLE: a loop under ~300 lines); a ceiling at today's size so it does not grow
    "gdfree.train.loop.train": 162,
}
"""Modules or functions allowed past a limit, each with its line count as a ceiling; docs/architecture.md says
why."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> str:
    """The layer unit a module belongs to: the longest prefix named in LAYERS."""
    names = [n for layer in LAYERS for n in layer if module == n or module.startswith(n + ".")]
    assert names, f"{module} is in no layer of tests/test_architecture.py (and docs/architecture.md)"
    return max(names, key=len)


def _rank(unit: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if unit in layer)


def _imports(path: Path) -> set[str]:
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "gdfree"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            if base.split(".")[0] == "gdfree":  # a name or a submodule of base: resolved against the modules later
                found |= {f"{base}.{a.name}" for a in node.names}
    return found


def _graph() -> dict[str, set[str]]:
    """Module -> the gdfree modules it imports (a name imported from a module counts as that module; the
    package ``gdfree`` itself, imported for its ``__version__``, is left out)."""
    raw = {_module_name(p): _imports(p) for p in sorted(SRC.rglob("*.py"))}

    def known(name: str) -> str:
        while name not in raw and "." in name:
            name = name.rsplit(".", 1)[0]
        return name

    return {m: {known(t) for t in ts} - {m, "gdfree"} for m, ts in raw.items()}


def test_every_import_goes_down_the_layers_or_sideways():
    upward = []
    for module, imported in _graph().items():
        for target in imported:
            if _rank(_unit(target)) > _rank(_unit(module)):
                upward.append(f"{module} -> {target}")
    assert not upward, "imports against the data flow:\n" + "\n".join(sorted(upward))


def _circle(edges: dict[str, set[str]]) -> list[str] | None:
    """One circle of ``edges`` (a path that comes back to its start), or None."""
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path, node, nxt]
            found = visit(nxt, [*path, node]) if nxt not in state else None
            if found:
                return found
        state[node] = 2
        return None

    for node in sorted(edges):
        found = visit(node, []) if node not in state else None
        if found:
            return found
    return None


def test_neither_packages_nor_modules_import_a_circle():
    graph = _graph()
    package_edges: dict[str, set[str]] = {}
    for module, imported in graph.items():
        source = _unit(module)
        package_edges.setdefault(source, set()).update(_unit(t) for t in imported if _unit(t) != source)
    assert _circle(package_edges) is None, "package circle: " + " -> ".join(_circle(package_edges) or [])
    assert _circle(graph) is None, "module circle: " + " -> ".join(_circle(graph) or [])


def _functions(node: ast.AST, prefix: str) -> list[tuple[str, int]]:
    """(qualified name, lines) of every function under ``node``, methods as ``module.Class.method``."""
    found = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            name = f"{prefix}.{child.name}"
            if not isinstance(child, ast.ClassDef):
                found.append((name, (child.end_lineno or child.lineno) - child.lineno + 1))
            found += _functions(child, name)
    return found


def test_no_module_or_function_outgrows_its_limit():
    too_long = []
    for path in sorted(SRC.rglob("*.py")):
        module = _module_name(path)
        text = path.read_text()
        lines = len(text.splitlines())
        if lines > EXCEPTIONS.get(module, MAX_MODULE_LINES):
            too_long.append(f"{module}: {lines} lines")
        for name, length in _functions(ast.parse(text), module):
            if length > EXCEPTIONS.get(name, MAX_FUNCTION_LINES):
                too_long.append(f"{name}: {length} lines")
    assert not too_long, "past the limits of docs/architecture.md:\n" + "\n".join(too_long)
