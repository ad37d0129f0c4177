"""The package's shape: no import circle, and no module too long to read in one sitting.

The import graph comes from the source (``ast``), not from running it: every import counts, those inside a
function or under ``TYPE_CHECKING`` too, since a reader who follows one meets the circle all the same.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.airflow_cli import REPO

PACKAGE = "airflow_provider_dli"
MAX_LINES = 600


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by the name of its ``__init__``)."""
    found = {}
    for path in sorted((REPO / PACKAGE).rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """The package's modules that ``name`` imports anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # "from package import module" imports the module; "from module import name", the module
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        yield from (target for target in targets if target in known and target != name)


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {name: set(imported(name, path, set(found))) for name, path in found.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_the_imports_a_reader_follows() -> None:
    """The graph itself: a function-level import, a TYPE_CHECKING one and a package's re-export all count."""
    graph = import_graph()
    assert f"{PACKAGE}.hooks.dli" in graph[f"{PACKAGE}.operators.lifecycle"]  # only inside functions and TYPE_CHECKING
    assert f"{PACKAGE}.emulator.server" in graph[f"{PACKAGE}.emulator"]
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle() -> None:
    assert circles(import_graph()) == []


def test_no_module_over_the_line_limit() -> None:
    lengths = {
        str(path.relative_to(REPO)): len(path.read_text().splitlines()) for path in (REPO / PACKAGE).rglob("*.py")
    }
    assert {path: length for path, length in lengths.items() if length > MAX_LINES} == {}
