"""The import-cycle check CI runs (scripts/check_imports.py) finds real cycles and ignores TYPE_CHECKING."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from script_module import load_script

ROOT = Path(__file__).resolve().parents[3]


def _load() -> ModuleType:
    return load_script("scripts/check_imports.py")


def test_lazy_import_cycle_found_type_checking_ignored(tmp_path: Path) -> None:
    ci = _load()
    a, b, c = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
    a.write_text("def f():\n    from sq_trt.b import g\n")
    b.write_text("from sq_trt import a\n")
    c.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from sq_trt.a import f\n")
    modules = {"sq_trt.a": a, "sq_trt.b": b, "sq_trt.c": c}
    graph = {name: ci.imports_of(name, path, modules) for name, path in modules.items()}
    assert graph == {"sq_trt.a": {"sq_trt.b"}, "sq_trt.b": {"sq_trt.a"}, "sq_trt.c": set()}
    assert ci.find_cycles(graph) == [["sq_trt.a", "sq_trt.b"]]


def test_relative_imports_resolve() -> None:
    ci = _load()
    assert ci._resolve("qdq", 1, "sq_trt.export.stage", False) == "sq_trt.export.qdq"
    assert ci._resolve("stage", 1, "sq_trt.export", True) == "sq_trt.export.stage"
    assert ci._resolve("errors", 2, "sq_trt.export.stage", False) == "sq_trt.errors"


def test_the_package_is_discovered_with_plugins_mapped() -> None:
    modules = _load().discover()
    assert "sq_trt.plugins.qdp" in modules and modules["sq_trt.plugins.qdp"] == ROOT / "plugins" / "qdp.py"
    assert "sq_trt.export.qdq" in modules
