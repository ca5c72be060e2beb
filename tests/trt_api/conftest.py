"""Session fixtures: the real TensorRT Python APIs (prepared once, cached across runs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .conformance import Finding
from .harness import (
    TRT_VERSIONS,
    BindingsEnv,
    HarnessUnavailable,
    mypy_work_dir,
    prepare_tensorrt,
    prepare_tensorrt_rtx,
)

# CI on the project's machines sets this to 1: there the harness must really run, never skip.
REQUIRE_ENV = "SQ_TRT_REQUIRE_TRT_API"


def _unavailable(what: str, exc: HarnessUnavailable) -> None:
    message = f"{what} unavailable here: {exc}"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{message} ({REQUIRE_ENV}=1 requires it)")
    pytest.skip(message)


@pytest.fixture(scope="session", params=TRT_VERSIONS, ids=lambda v: f"trt{v}")
def trt_env(request: pytest.FixtureRequest) -> BindingsEnv:
    """TensorRT's real bindings of one version, importable on stub libraries."""
    try:
        return prepare_tensorrt(request.param)
    except HarnessUnavailable as exc:
        _unavailable(f"TensorRT {request.param} bindings", exc)
        raise


@pytest.fixture(scope="session")
def rtx_env() -> BindingsEnv:
    """Stubs of the installed TensorRT-RTX bindings."""
    try:
        return prepare_tensorrt_rtx()
    except HarnessUnavailable as exc:
        _unavailable("TensorRT-RTX", exc)
        raise


@pytest.fixture(scope="session")
def mypy_work() -> Path:
    """Stable working directory, so mypy's incremental cache survives between runs."""
    return mypy_work_dir()


@pytest.fixture(scope="session")
def conformance(mypy_work: Path) -> dict[str, tuple[list[Finding], list[str]]]:
    """Memo of conformance results per API label (several tests read the same run)."""
    return {}
