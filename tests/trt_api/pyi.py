"""``.pyi`` stubs of a pybind11 module (pybind11-stubgen), repaired so mypy can read them."""

from __future__ import annotations

import ast
import json
import keyword
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from .tools import HarnessError, run_tool


def generate_pyi(modules: Sequence[str], out: Path, env: dict[str, str]) -> None:
    """Write ``.pyi`` stubs of the importable ``modules`` into ``out`` with pybind11-stubgen."""
    run_tool(
        [sys.executable, "-m", "pybind11_stubgen", "-o", str(out), *modules],
        env=env,
        timeout=300,
    )
    for pyi in out.rglob("*.pyi"):
        sanitize_pyi(pyi)
        if "plugin" in pyi.relative_to(out).parts:
            pyi.write_text(widen_single_tuples(pyi.read_text()))
    plugin_modules = [m for m in modules if m.endswith(".plugin")]
    if plugin_modules:
        # The last line: importing tensorrt.plugin may print notices first.
        probe = run_tool([sys.executable, "-c", _SETATTR_PROBE, *plugin_modules], env=env)
        guarded = json.loads(probe.strip().splitlines()[-1])
        for pyi in out.rglob("*.pyi"):
            declare_guarded_attributes(pyi, guarded)
    extension = modules[0].split(".")[0]
    buffers = run_tool([sys.executable, "-c", _BUFFER_PROBE, extension], env=env).split()
    for pyi in out.rglob("*.pyi"):
        add_buffer_protocol(pyi, buffers)


# Classes whose C type fills tp_as_buffer support bytes(x)/memoryview(x) (e.g. IHostMemory). Python 3.11
# shows no attribute for that, and pybind11-stubgen writes none, so read the slot (its offset in
# PyTypeObject has been 160 bytes on 64-bit CPython since 3.8).
_BUFFER_PROBE = """
import ctypes, importlib, sys
mod = importlib.import_module(sys.argv[1])
for sub in [mod] + [v for v in vars(mod).values() if type(v).__name__ == "module"]:
    for name, obj in vars(sub).items():
        if isinstance(obj, type) and ctypes.c_void_p.from_address(id(obj) + 160).value:
            print(f"{obj.__module__}.{obj.__qualname__}")
"""


# Pure-Python classes of `tensorrt.plugin` that guard their attributes with `__setattr__` (e.g.
# KernelLaunchParams: `params.gridx = ...` raises AttributeError). pybind11-stubgen writes the
# untyped `__setattr__` and no attribute, so mypy would accept any name. List each class's real
# instance attributes (an instance built with no argument, else the `self.X =` of its __init__).
_SETATTR_PROBE = """
import ast, importlib, inspect, json, sys, textwrap
found = {}
for name in sys.argv[1:]:
    package = importlib.import_module(name)
    modules = [package] + [m for m in sys.modules.values() if getattr(m, "__name__", "").startswith(name + ".")]
    for mod in modules:
        for obj in list(vars(mod).values()):
            if not (isinstance(obj, type) and obj.__module__ == mod.__name__ and "__setattr__" in vars(obj)):
                continue
            try:
                names = sorted(vars(obj()))
            except Exception:
                tree = ast.parse(textwrap.dedent(inspect.getsource(obj.__init__)))
                names = sorted({t.attr for n in ast.walk(tree) if isinstance(n, ast.Assign) for t in n.targets
                                if isinstance(t, ast.Attribute) and getattr(t.value, "id", "") == "self"})
            found[obj.__module__ + "." + obj.__qualname__] = names
print(json.dumps(found))
"""


def declare_guarded_attributes(path: Path, guarded: dict[str, list[str]]) -> None:
    """Replace the untyped ``__setattr__`` of each guarded class by its real attributes.

    Each attribute is typed like the ``__init__`` parameter of the same name (what the class
    accepts on assignment), else ``typing.Any``: the name is what is checked.
    """
    module = _stub_module(path)
    text = path.read_text()
    tree = ast.parse(text)
    lines = text.splitlines()
    edits: list[tuple[int, int, list[str]]] = []
    for node in tree.body:
        names = guarded.get(f"{module}.{node.name}") if isinstance(node, ast.ClassDef) else None
        if names is None or not isinstance(node, ast.ClassDef):
            continue
        methods = {f.name: f for f in node.body if isinstance(f, ast.FunctionDef)}
        setattr_def = methods.get("__setattr__")
        if setattr_def is None or setattr_def.end_lineno is None:
            continue
        init = methods.get("__init__")
        types = (
            {a.arg: ast.get_source_segment(text, a.annotation) for a in init.args.args if a.annotation}
            if init
            else {}
        )
        defined = {
            t.id
            for a in node.body
            if isinstance(a, ast.AnnAssign)
            for t in [a.target]
            if isinstance(t, ast.Name)
        }
        defined |= set(methods)
        declared = [f"    {name}: {types.get(name) or 'typing.Any'}" for name in names if name not in defined]
        edits.append((setattr_def.lineno - 1, setattr_def.end_lineno, declared))
    for start, end, declared in sorted(edits, reverse=True):
        lines[start:end] = declared
    if edits and "import typing" not in lines:
        lines.insert(1, "import typing")
    path.write_text("\n".join(lines) + "\n")


def add_buffer_protocol(path: Path, classes: Sequence[str]) -> None:
    """Declare ``__buffer__`` on the stub classes (``module.Class``) that support the buffer protocol."""
    lines = path.read_text().splitlines()
    names = {c.rsplit(".", 1)[1] for c in classes if c.rsplit(".", 1)[0] == _stub_module(path)}
    out = []
    for line in lines:
        out.append(line)
        match = re.match(r"class (\w+)\b.*:$", line)
        if match and match[1] in names:
            out.append("    def __buffer__(self, flags: int, /) -> memoryview: ...")
    path.write_text("\n".join(out) + "\n")


def _stub_module(path: Path) -> str:
    parts = list(path.with_suffix("").parts)
    start = max(i for i, p in enumerate(parts) if p == "pyi") + 1
    parts = parts[start:]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _split_params(params: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(params):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            parts.append(params[start:i].strip())
            start = i + 1
    return parts + [params[start:].strip()] if params.strip() else parts


def _fix_signature(line: str) -> str:
    """Make one generated ``def`` line valid Python, keeping its parameters' names, order and types."""
    indent = line[: len(line) - len(line.lstrip())]
    head, _, rest = line.strip().partition("(")
    params_text, _, tail = rest.rpartition(")")
    fixed, seen_default = [], False
    for param in _split_params(params_text):
        name, sep, annotation = param.partition(":")
        # C++ parameter names that are Python keywords (`in`) can only be passed by position anyway.
        if keyword.iskeyword(name.strip()):
            param = f"{name.strip()}_{sep}{annotation}"
        # pybind11 allows a required argument after defaulted ones (by keyword); a stub cannot say so.
        if "=" in param:
            seen_default = True
        elif seen_default and not param.startswith("*"):
            param += " = ..."
        fixed.append(param)
    return f"{indent}{head}({', '.join(fixed)}){tail}"


def _widen(text: str, wrap: str) -> str:
    out, i = [], 0
    while (j := text.find("tuple[", i)) >= 0:
        k, depth, comma = j + len("tuple["), 1, False
        while depth:
            depth += text[k] in "[("
            depth -= text[k] in "])"
            comma |= depth == 1 and text[k] == ","
            k += 1
        inner = _widen(text[j + len("tuple[") : k - 1], wrap)
        out.append(text[i:j])
        out.append(f"tuple[{inner}]" if comma or inner == "()" else wrap.format(inner))
        i = k
    return "".join(out) + text[i:]


def widen_single_tuples(text: str) -> str:
    """Read ``tensorrt.plugin``'s ``Tuple[X]`` as NVIDIA means it: any number of X.

    ``tensorrt.plugin`` is annotated by hand with ``Tuple[X]`` meaning "a tuple of X" (``from_tuple``,
    ``from_shape_expr``, ``Shape.max``), which a type checker reads as "exactly one X". As a parameter
    it is only iterated, and NVIDIA's own sample passes a list
    (``samples/python/quickly_deployable_plugins/qdp_defs.py``: ``SymIntExprs.from_tuple([...])``), so
    parameters become ``typing.Sequence[X]``; results become ``tuple[X, ...]``.
    """
    lines = []
    for line in text.splitlines():
        params, arrow, result = (
            line.rpartition(") ->") if line.lstrip().startswith("def ") else ("", "", line)
        )
        lines.append(_widen(params, "typing.Sequence[{}]") + arrow + _widen(result, "tuple[{}, ...]"))
    head, _, rest = "\n".join(lines).partition("\n")
    return f"{head}\nimport typing\n{rest}\n"


def sanitize_pyi(path: Path) -> None:
    """Repair the few signatures pybind11-stubgen writes that are not valid Python.

    Raises:
        HarnessError: The stub still does not parse (a new kind of breakage to handle here).
    """
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.lstrip().startswith("def "):
            try:
                ast.parse(line.strip() + "\n    ...")
            except SyntaxError:
                lines[i] = _fix_signature(line)
    text = "\n".join(lines) + "\n"
    try:
        ast.parse(text)
    except SyntaxError as exc:
        raise HarnessError(
            f"generated stub {path} is not valid Python at line {exc.lineno}: {exc.msg}"
        ) from exc
    path.write_text(text)
