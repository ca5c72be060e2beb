"""Shared fixtures. Tests never download anything except the demo model (cached by `sq-trt fetch-demo`)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# The demo model's session-wide exports (one trace per run, shared by the export, compare and build tests).
from demo_fixtures import demo_float_graphs, demo_naive_export, session_tmp  # noqa: F401


def _pin_xdist_worker() -> None:
    """Under pytest-xdist (what scripts/test.sh runs), give each worker its own share of the CPUs.

    Two workers whose torch / ONNX Runtime pools each assume every core oversubscribe a
    2-core machine (measured earlier: 799 s against 814 s serial; the fused-GEMM demo test
    67 -> 185 s). Pinned, each worker's pools size themselves to its one core (torch through
    OMP_NUM_THREADS, set before torch is imported; ONNX Runtime through
    :func:`sq_trt.runtime.onnx.session_options`; child processes inherit the mask).
    """
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    cpus = sorted(os.sched_getaffinity(0))
    if worker is None or count is None or int(count) < 2 or len(cpus) < int(count):
        os.environ.setdefault("OMP_NUM_THREADS", str(len(cpus)))
        return
    share = cpus[int(worker.removeprefix("gw")) :: int(count)]
    os.sched_setaffinity(0, share)
    os.environ["OMP_NUM_THREADS"] = str(len(share))


_pin_xdist_worker()


@pytest.fixture(scope="session")
def demo_loaded():
    """The real demo model (SmolLM2-135M), loaded once per session; skips if it was never fetched."""
    from sq_trt.errors import ModelLoadError
    from sq_trt.models.demo import demo_model_dir

    try:
        demo_model_dir(fetch=False)
    except ModelLoadError as exc:
        if os.environ.get("CI"):
            raise  # CI fetches the demo first (scripts/test.sh); its absence there is a failure
        pytest.skip(f"demo model not fetched: {exc}")
    from sq_trt.models.loading import load_model

    return load_model("demo")


@pytest.fixture(scope="module")
def module_tmp(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], Path]]:
    """``tmp_path_factory.mktemp`` for module fixtures, removed when the module's tests all passed.

    The demo-model modules write ~0.5-1 GB each (FP16 + INT8 ONNX, smoothed
    checkpoints); pytest keeps factory directories until the session ends, which
    added up to ~2 GB and filled a CI machine's disk. Function-level ``tmp_path``
    directories are dropped by ``tmp_path_retention_policy = "failed"``
    (pyproject.toml); this does the same for module fixtures, and keeps the files
    of a module with a failure for inspection.
    """
    made: list[Path] = []
    failed_before = request.session.testsfailed

    def mktemp(name: str) -> Path:
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]

    yield mktemp
    if request.session.testsfailed == failed_before:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)


# Fixtures of the session's demo trace (tests/demo_fixtures.py): the modules naming them run on one worker.
_DEMO_TRACE_FIXTURES = ("demo_float_graphs", "demo_naive_export")


def _demo_trace_modules(root: Path) -> set[str]:
    """Test modules (rootdir-relative, as in node ids) that name a demo-trace fixture.

    Read from the source because the scheduler runs in the controller, which does not collect;
    a module can only use those fixtures by naming them (no other fixture depends on them).
    """
    return {
        path.relative_to(root).as_posix()
        for path in (root / "tests").rglob("test_*.py")
        if any(name in path.read_text(encoding="utf-8") for name in _DEMO_TRACE_FIXTURES)
    }


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under pytest-xdist (``-n 2 --dist loadscope``, what scripts/test.sh runs): which tests share a worker.

    Every module runs whole on one worker, so its module fixtures are made once. The modules that
    use the session's demo trace are one unit, so that trace (a minute) is made once per run; the
    TensorRT API harness shares session fixtures across its modules: one unit. (pytest-xdist's own
    ``loadgroup`` marks do nothing under pytest 9.2: it renames node ids, which pytest 9 no
    longer lets it do.)
    """
    from xdist.scheduler import LoadScopeScheduling

    traced = _demo_trace_modules(config.rootpath)

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::")[0]
            return "demo-trace" if path in traced else "trt_api" if path.startswith("tests/trt_api/") else path

    return ModuleScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an xdist worker, the demo-model modules first (the trace's, then the others): units are
    handed out in collection order (``--no-loadscope-reorder``), so the longest start at once and
    the two workers end close together. Without xdist, pytest's order."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return
    traced = _demo_trace_modules(config.rootpath)
    demo = {item.nodeid.split("::")[0] for item in items if "demo_loaded" in getattr(item, "fixturenames", ())}

    def order(item: pytest.Item) -> tuple[bool, bool]:
        path = item.nodeid.split("::")[0]
        return path not in traced, path not in demo

    items.sort(key=order)
