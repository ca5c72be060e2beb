"""A pipeline candidate's ``encoding: auto`` follows the engine builder of the run."""

from __future__ import annotations

import types

import pytest

from sq_trt.engine.backends import Backend
from sq_trt.pipeline.context import BuildPlan, PipelineContext
from sq_trt.pipeline.recipe import Candidate, validate_recipe
from sq_trt.pipeline.stages import candidate_encoding


def _context(backend: Backend | None) -> PipelineContext:
    recipe = validate_recipe({"kind": "pipeline", "name": "t", "model": {"source": "tiny:llama"}})
    return PipelineContext(recipe, _cache={"build_plan": BuildPlan(backend, "test")})


# Only the backend's name decides (no TensorRT call is made), so a named module stands in.
TENSORRT = Backend("tensorrt", types.ModuleType("tensorrt"), "11.4")
TENSORRT_RTX = Backend("tensorrt_rtx", types.ModuleType("tensorrt_rtx_bindings"), "1.7")


@pytest.mark.parametrize(
    ("backend", "expected"), [(TENSORRT, "fused-gemm"), (TENSORRT_RTX, "portable"), (None, "portable")]
)
def test_auto_is_fused_gemm_for_tensorrt_proper_and_portable_otherwise(
    backend: Backend | None, expected: str
) -> None:
    candidate = Candidate(name="c")
    assert candidate.encoding == "auto"
    assert candidate_encoding(_context(backend), candidate) == expected


def test_explicit_encodings_and_per_tensor_are_kept() -> None:
    ctx = _context(TENSORRT)
    assert candidate_encoding(ctx, Candidate(name="p", encoding="plugin")) == "plugin"
    assert candidate_encoding(ctx, Candidate(name="q", encoding="portable")) == "portable"
    assert candidate_encoding(ctx, Candidate(name="t", act_mode="per_tensor")) == "portable"
