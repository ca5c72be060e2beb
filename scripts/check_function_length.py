"""Refuse functions over 60 lines in sq_trt/ (issue 12), with a shrinking allowlist of the known ones.

A function's length is its lines from ``def`` to its last statement, not counting its
docstring (the docstring is documentation, not logic to split). The allowlist below
records the functions still over the limit with their current length: one that grows,
or a new one over the limit, fails; split it instead. Remove an entry once its
function is split. Run: ``python scripts/check_function_length.py`` (exit 1 on failure).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

LIMIT = 60
ROOT = Path(__file__).resolve().parents[1]
# path:function -> lines today. Only ever shrink this table.
ALLOWED: dict[str, int] = {
}


def function_lengths(root: Path = ROOT) -> dict[str, int]:
    """``path:qualified name`` -> length (docstring excluded) of every function in sq_trt/."""
    lengths: dict[str, int] = {}
    for path in sorted((root / "sq_trt").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        rel = path.relative_to(root).as_posix()
        _visit(tree, rel, "", lengths)
    return lengths


def _visit(node: ast.AST, rel: str, prefix: str, lengths: dict[str, int]) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            name = f"{prefix}{child.name}"
            assert child.end_lineno is not None
            length = child.end_lineno - child.lineno + 1
            doc = child.body[0] if child.body else None
            if isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str):
                assert doc.end_lineno is not None
                length -= doc.end_lineno - doc.lineno + 1
            lengths[f"{rel}:{name}"] = length
            _visit(child, rel, f"{name}.", lengths)
        elif isinstance(child, ast.ClassDef):
            _visit(child, rel, f"{prefix}{child.name}.", lengths)


def problems(lengths: dict[str, int], allowed: dict[str, int] = ALLOWED, limit: int = LIMIT) -> list[str]:
    """One line per function over ``limit`` that is not allowed, or grew past its allowance."""
    found = []
    for name, length in sorted(lengths.items()):
        if length <= limit:
            continue
        if name not in allowed:
            found.append(f"{name} is {length} lines (limit {limit}): split it")
        elif length > allowed[name]:
            found.append(f"{name} grew to {length} lines (allowed {allowed[name]} while it is split): split it")
    return found


def main() -> int:
    """Print the problems; exit 1 when there are any."""
    found = problems(function_lengths())
    for line in found:
        print(line)
    print(f"function-length check: {'FAIL' if found else 'ok'} ({len(ALLOWED)} functions still allowed over {LIMIT})")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
