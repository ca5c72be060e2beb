"""The import check CI runs (scripts/check_imports.py): cycles through any import, and stages importing stages."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from script_module import load_script

ROOT = Path(__file__).resolve().parents[3]


def _load() -> ModuleType:
    return load_script("scripts/check_imports.py")


def test_lazy_and_type_checking_imports_count(tmp_path: Path) -> None:
    ci = _load()
    a, b, c = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
    a.write_text("def f():\n    from sq_trt.b import g\n")
    b.write_text("from sq_trt import a\n")
    c.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from sq_trt.a import f\n")
    modules = {"sq_trt.a": a, "sq_trt.b": b, "sq_trt.c": c}
    graph = {name: ci.imports_of(name, path, modules) for name, path in modules.items()}
    assert graph == {"sq_trt.a": {"sq_trt.b"}, "sq_trt.b": {"sq_trt.a"}, "sq_trt.c": {"sq_trt.a"}}
    assert ci.find_cycles(graph) == [["sq_trt.a", "sq_trt.b"]]


def test_a_cycle_closed_only_under_type_checking_is_found(tmp_path: Path) -> None:
    # The smooth <-> autoalpha shape: one side imports inside a function, the other for annotations.
    ci = _load()
    stage, search = tmp_path / "stage.py", tmp_path / "search.py"
    stage.write_text("def run():\n    from sq_trt.smooth.search import search_alpha\n")
    search.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from sq_trt.smooth.stage import SmoothConfig\n"
    )
    modules = {"sq_trt.smooth.stage": stage, "sq_trt.smooth.search": search}
    graph = {name: ci.imports_of(name, path, modules) for name, path in modules.items()}
    assert ci.find_cycles(graph) == [["sq_trt.smooth.search", "sq_trt.smooth.stage"]]


def test_a_stage_importing_another_stage_is_refused_except_artifacts_and_contracts() -> None:
    ci = _load()
    graph = {
        "sq_trt.report": {"sq_trt.calibrate.stage", "sq_trt.artifacts", "sq_trt.compare.gate"},
        "sq_trt.report.content": {"sq_trt.report.html", "sq_trt.models.registry"},
        "sq_trt.compare.runners": {"sq_trt.smooth", "sq_trt.runtime.onnx", "sq_trt.artifacts.smoothed"},
        "sq_trt.pipeline.stages": {"sq_trt.calibrate.stage", "sq_trt.smooth.stage", "sq_trt.report"},
        "sq_trt.models.offload": {"sq_trt.smooth.stage"},
    }
    found = ci.stage_imports(graph)
    assert [line.split(";")[0] for line in found] == [
        "stage compare imports stage smooth: sq_trt.compare.runners -> sq_trt.smooth",
        "stage report imports stage calibrate: sq_trt.report -> sq_trt.calibrate.stage",
    ]
    # Without the contract, the gate import is refused too.
    assert len(ci.stage_imports(graph, contracts={})) == 3


def test_the_repository_has_no_cycle_and_no_stage_imports_another(capsys: pytest.CaptureFixture[str]) -> None:
    assert _load().main() == 0, capsys.readouterr().out


def test_relative_imports_resolve() -> None:
    ci = _load()
    assert ci._resolve("qdq", 1, "sq_trt.export.stage", False) == "sq_trt.export.qdq"
    assert ci._resolve("stage", 1, "sq_trt.export", True) == "sq_trt.export.stage"
    assert ci._resolve("errors", 2, "sq_trt.export.stage", False) == "sq_trt.errors"


def test_the_package_is_discovered_with_plugins_mapped() -> None:
    modules = _load().discover()
    assert "sq_trt.plugins.qdp" in modules and modules["sq_trt.plugins.qdp"] == ROOT / "plugins" / "qdp.py"
    assert "sq_trt.export.qdq" in modules
