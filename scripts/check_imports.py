"""Fail on import cycles between sq-trt's own modules, and on a stage importing another stage.

Every ``import sq_trt...`` counts: at module level, inside a function (a lazy import
still couples the two modules) and under ``if TYPE_CHECKING:`` (an annotation that
names another module is a dependency on it too, and a cycle through one is where the
runtime cycle starts). ``from pkg import name`` points at ``pkg.name`` when that is a
module and at ``pkg`` otherwise, so a package's ``__init__`` re-exports do not make
every submodule look cyclic.

The stage packages (:data:`STAGE_PACKAGES`) meet only through artifacts: a module of
one may import the shared layers (``sq_trt.artifacts``, ``models``, ``quant``,
``runtime``, ``generate``, the foundations) but no module of another stage package.
:data:`CONTRACTS` names the few modules of a stage package that other stages may read,
each with the reason.

Usage: ``python scripts/check_imports.py`` (exit 1 and one line per cycle or stage import).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The installed package maps `plugins/` to `sq_trt.plugins` (pyproject.toml package-dir).
PACKAGE_DIRS = {"sq_trt": ROOT / "sq_trt", "sq_trt.plugins": ROOT / "plugins"}
# One package per stage of `calibrate -> smooth -> export -> build -> compare -> report`.
STAGE_PACKAGES = ("calibrate", "smooth", "export", "engine", "compare", "report")
# Modules of a stage package that other stages may import, and why: none reads a stage's output.
CONTRACTS: dict[str, str] = {
    "sq_trt.compare.gate": "the one gate verdict, applied by compare and by the report to the verified metrics",
    "sq_trt.engine.backends": "which TensorRT this host has: export's `auto` encoding asks what a build would use",
    "sq_trt.engine.gpu": "which GPUs this host sees (compare records them as provenance)",
    "sq_trt.engine.plugin_loader": "the sq_trt plugins, registered before TensorRT parses a graph with their nodes",
}


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


def _resolve(module: str, level: int, current: str, is_package: bool) -> str:
    if level == 0:
        return module
    base = current.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules that ``name`` imports anywhere in its source."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(node.module or "", node.level, name, path.name == "__init__.py")
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
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


def stage_of(module: str) -> str | None:
    """The stage package a module belongs to (``sq_trt.export.qdq`` -> ``export``), or None."""
    parts = module.split(".")
    return parts[1] if parts[0] == "sq_trt" and len(parts) > 1 and parts[1] in STAGE_PACKAGES else None


def stage_imports(graph: Mapping[str, set[str]], contracts: Mapping[str, str] = CONTRACTS) -> list[str]:
    """One line per import of a stage package's module by another stage package's module."""
    found = []
    for module in sorted(graph):
        stage = stage_of(module)
        if stage is None:
            continue
        for target in sorted(graph[module]):
            other = stage_of(target)
            if other is not None and other != stage and target not in contracts:
                found.append(
                    f"stage {stage} imports stage {other}: {module} -> {target}; "
                    "read its output through sq_trt.artifacts"
                )
    return found


def main() -> int:
    """Print every cycle and stage-to-stage import; exit 1 when there is any."""
    modules = discover()
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    cycles = find_cycles(graph)
    for cycle in cycles:
        edges = [f"{a} -> {b}" for a in cycle for b in sorted(graph[a]) if b in cycle]
        print(f"import cycle between {len(cycle)} modules: {'; '.join(edges)}")
    crossings = stage_imports(graph)
    for line in crossings:
        print(line)
    if not cycles and not crossings:
        print(f"import check: {len(modules)} modules, no cycles, no stage imports another")
    return 1 if cycles or crossings else 0


if __name__ == "__main__":
    sys.exit(main())
