"""Shared fixtures. Tests never download anything except the demo model (cached by `sq-trt fetch-demo`)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# The demo model's session-wide exports (one trace per run, shared by the export, compare and build tests).
from demo_fixtures import demo_float_graphs, demo_naive_export, session_tmp  # noqa: F401

# Keep torch from oversubscribing the 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")


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
