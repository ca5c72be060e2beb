"""Session fixtures of the real demo model (SmolLM2-135M): each expensive export happens once per test run.

A dynamo trace of the demo costs one to two minutes on two cores, and the export, compare and
build tests all start from the same float16 graph (issue 16: four fixtures re-exported the same
model, most of the suite's time). Here the session traces it once (:class:`FloatGraphs` hands
out copies, so no test sees another's rewrite) and writes one naive per-token export that the
compare and build tests read. Tests that need another export (the plugin encoding, O3) call
:func:`sq_trt.export.stage.export_model` with ``float_graphs=demo_float_graphs`` and pay only the
INT8 rewrite. Registered by ``tests/conftest.py``; ``demo_loaded`` (the model itself) lives there.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def session_tmp(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """``tmp_path_factory.mktemp`` for session fixtures, removed at the end of a run without failures.

    Like ``module_tmp`` (conftest.py): the demo exports are ~0.5 GB each, and pytest keeps factory
    directories until the session ends; a failed run keeps them for inspection.
    """
    made: list[Path] = []

    def mktemp(name: str) -> Path:
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]

    yield mktemp
    if request.session.testsfailed == 0:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def demo_float_graphs(demo_loaded: Any) -> Iterator[Any]:
    """The demo's float graphs, each (graph kind, dtype, opset) traced once per test run.

    ``FloatGraphs`` identifies the model by the object, so ask it only for ``demo_loaded.model``
    (no test modifies that model: the ones that smooth or fake-quantize work on a copy).
    """
    from sq_trt.export.stage import FloatGraphs

    graphs = FloatGraphs(keep=True)
    yield graphs
    graphs.clear()


@pytest.fixture(scope="session")
def demo_naive_export(demo_loaded: Any, demo_float_graphs: Any, session_tmp: Any) -> Path:
    """The export artifact of the unsmoothed demo: per-token W8A8 in portable ONNX ops + its FP16 twin.

    What ``sq-trt export --model demo --per-token-encoding portable`` writes (the CLI path itself
    is tested on the tiny models); read-only for its users.
    """
    from sq_trt.export.stage import ExportConfig, export_model

    out = session_tmp("demo-naive") / "export"
    export_model(
        demo_loaded,
        out,
        config=ExportConfig(act_mode="per_token", encoding="portable"),
        float_graphs=demo_float_graphs,
    )
    return out
