"""Engine builds in a child process (what the pipeline's parallel builds run): same engine, same errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from sq_trt.engine.backends import load_tensorrt_rtx
from sq_trt.engine.builder import build_engine
from sq_trt.engine.isolated import build_engine_isolated
from sq_trt.errors import ArtifactError, BuildError

from .test_build_graphs import GRAPHS
from .test_builder import _settings

pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX (the `rtx` extra) is not installed")


def test_the_child_builds_the_same_engine_as_this_process_and_relays_its_log(tmp_path: Path) -> None:
    onnx_path = tmp_path / "fp16.onnx"
    GRAPHS["fp16"](onnx_path)
    here = _settings(tmp_path / "here", onnx_path)
    build_engine(here, load_tensorrt_rtx(), log=lambda _: None)
    lines: list[str] = []
    child = _settings(tmp_path / "child", onnx_path)
    build_engine_isolated(child, "tensorrt_rtx", force=False, log=lines.append)
    plan = Path("m") / "rtx.plan"
    # TensorRT-RTX builds are deterministic (test_builder.py), so the bytes must match.
    assert (tmp_path / "child" / "engines" / plan).read_bytes() == (tmp_path / "here" / "engines" / plan).read_bytes()
    assert any(line.startswith("[build] built in") for line in lines)


def test_the_childs_error_comes_back_with_its_class_and_message(tmp_path: Path) -> None:
    (tmp_path / "corrupt.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(BuildError, match="corrupt.onnx"):
        build_engine_isolated(_settings(tmp_path, tmp_path / "corrupt.onnx"), "tensorrt_rtx", force=False, log=print)
    onnx_path = tmp_path / "fp16.onnx"
    GRAPHS["fp16"](onnx_path)
    build_engine_isolated(_settings(tmp_path, onnx_path), "tensorrt_rtx", force=False, log=lambda _: None)
    with pytest.raises(ArtifactError, match="exists") as raised:  # the same plan again, without force
        build_engine_isolated(_settings(tmp_path, onnx_path), "tensorrt_rtx", force=False, log=lambda _: None)
    assert type(raised.value) is ArtifactError  # the child's class, not a generic BuildError


def test_generation_settings_reach_the_child_equal() -> None:
    # Generation settings derive their profiles; sending them back as well would be refused in the child.
    from sq_trt.engine.config import GenerationLimits
    from sq_trt.engine.isolated import _settings_json
    from sq_trt.engine.recipe import BuildSettings

    for settings in (
        BuildSettings(onnx=Path("a.onnx"), name="x", target="rtx", generation=GenerationLimits(max_batch=2)),
        BuildSettings(onnx=Path("a.onnx"), name="x", target="rtx", profiles=[{"name": "p", "batch": [1, 1, 2]}]),
    ):
        assert BuildSettings.model_validate(_settings_json(settings)) == settings
