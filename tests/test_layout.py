"""The package's shape: no import cycles, no module too long to read.

The floors themselves are import-linter contracts (``pyproject.toml``), checked by
``make lint`` and ``make test``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "shiftlab"
MAX_LINES = 600


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_planted_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_in_a_circle():
    """Imports inside functions count too: a cycle is a cycle when it runs (imports only
    for type checkers never run, and are left out)."""
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("shiftlab", exclude_type_checking_imports=True)
    edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    assert _cycles(edges) == []


def test_no_module_is_over_600_lines():
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def test_the_old_documented_import_path_warns_and_still_works():
    import importlib
    import sys

    sys.modules.pop("shiftlab.pipeline", None)
    with pytest.warns(DeprecationWarning, match="moved to shiftlab.study"):
        pipeline = importlib.import_module("shiftlab.pipeline")
    from shiftlab.study import base_model_facts

    assert pipeline.base_model_facts is base_model_facts
