"""Fail on import cycles between sq-trt's own modules.

Every ``import sq_trt...`` counts, at module level or inside a function (a lazy
import still couples the two modules), except under ``if TYPE_CHECKING:``, which
never runs. ``from pkg import name`` points at ``pkg.name`` when that is a module
and at ``pkg`` otherwise, so a package's ``__init__`` re-exports do not make every
submodule look cyclic.

Usage: ``python scripts/check_imports.py`` (exit 1 and one line per cycle).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The installed package maps `plugins/` to `sq_trt.plugins` (pyproject.toml package-dir).
PACKAGE_DIRS = {"sq_trt": ROOT / "sq_trt", "sq_trt.plugins": ROOT / "plugins"}


def discover() -> dict[str, Path]:
    """Module name -> source file for every module of the package."""
    modules: dict[str, Path] = {}
    for prefix, folder in PACKAGE_DIRS.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([prefix, *parts])
            if not (prefix == "sq_trt" and parts[:1] == ["plugins"]):
                modules[name] = path
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(module: str, level: int, current: str, is_package: bool) -> str:
    if level == 0:
        return module
    base = current.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules that ``name`` imports when it runs."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(node.module or "", node.level, name, path.name == "__init__.py")
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m in modules and m != name}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return cycles


def main() -> int:
    modules = discover()
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    cycles = find_cycles(graph)
    for cycle in cycles:
        edges = [f"{a} -> {b}" for a in cycle for b in sorted(graph[a]) if b in cycle]
        print(f"import cycle between {len(cycle)} modules: {'; '.join(edges)}")
    if not cycles:
        print(f"import-cycle check: {len(modules)} modules, no cycles")
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
