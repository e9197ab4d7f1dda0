"""The package's shape, as docs/architecture.md draws it: no module imports one that imports
it back, the layers import only downward (import-linter's contracts in pyproject.toml, run
here and by .ci/run), no module grows past one job's 600 lines, and no function past what a
reader holds in one screen."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "moa"


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Each module's imports of other moa modules, read from its source (every import)."""
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
                for alias in node.names:  # "from . import recipes" names a module
                    found.add(
                        f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target
                    )
        graph[name] = {t for t in found if t in modules and t != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    # Packages' __init__ re-export their modules; a cycle through one is not a loop of code.
    inits = {m for m in graph if (PACKAGE.parent / m.replace(".", "/") / "__init__.py").exists()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], _ = 1, stack.append(node)
        for nxt in sorted(graph[node] - inits):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node], _ = 2, stack.pop()
        return None

    for start in sorted(set(graph) - inits):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_module_imports_one_that_imports_it_back():
    assert _cycle(_imports()) is None


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_history_reads_no_cost_back():
    graph = _imports()
    assert "moa._cost" in graph["moa._history"]
    assert "moa._history" not in graph["moa._cost"]


def test_the_walk_never_knows_a_layer():
    # The walk asks the composed stack for calls; the layers live in _calls alone.
    walk = (PACKAGE / "_executor.py").read_text(encoding="utf-8")
    for layer in (
        "with_timeout",
        "with_cap",
        "with_limits",
        "with_hedge",
        "retrying",
        "caching",
        "reporting",
        "streaming",
        "Cache",
        "Limits",
        "Retry",
    ):
        assert layer not in walk, layer


def _code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """A function's lines, its docstring left out (a promise is not code to hold in mind)."""
    length = node.end_lineno - node.lineno + 1  # type: ignore[operator]
    first = node.body[0]
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        length -= first.end_lineno - first.lineno + 1  # type: ignore[operator]
    return length


def test_no_function_is_longer_than_a_screen():
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if (length := _code_lines(node)) > 60:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length})")
    assert not long, long


def test_no_module_is_longer_than_one_job():
    long = [
        f"{path.relative_to(ROOT)} ({n})"
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > 600
    ]
    assert not long, long


def test_the_layers_import_only_downward():
    lint = shutil.which("lint-imports", path=os.path.dirname(sys.executable))
    if lint is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    proc = subprocess.run([lint], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
