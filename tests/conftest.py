"""Shared fixtures. Tests never download anything except the demo model (cached by `sq-trt fetch-demo`)."""

from __future__ import annotations

import os

import pytest

# Keep torch from oversubscribing the 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def demo_loaded():
    """The real demo model (SmolLM2-135M), loaded once per session; skips if it was never fetched."""
    from sq_trt.models.demo import demo_model_dir
    from sq_trt.errors import ModelLoadError

    try:
        demo_model_dir(fetch=False)
    except ModelLoadError as exc:
        if os.environ.get("CI"):
            raise  # CI fetches the demo first (scripts/test.sh); its absence there is a failure
        pytest.skip(f"demo model not fetched: {exc}")
    from sq_trt.models.loading import load_model

    return load_model("demo")
