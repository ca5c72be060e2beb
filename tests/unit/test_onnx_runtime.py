"""The CPU executor: files with external data, missing files, and sq_trt nodes it cannot run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from sq_trt import plugin_spec
from sq_trt.errors import ExportError
from sq_trt.export import stage
from sq_trt.export.runtime import expand_plugin_nodes, session_from_onnx


def _matmul_model() -> tuple[onnx.ModelProto, np.ndarray]:
    weight = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", 32])],
        initializer=[numpy_helper.from_array(weight, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), weight


def test_large_models_are_saved_with_external_data_and_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lowering the 2 GB threshold to 0 takes the external-data path a real large model takes."""
    model, weight = _matmul_model()
    monkeypatch.setattr(stage, "EXTERNAL_DATA_THRESHOLD", 0)
    stage.save_onnx(model, tmp_path / "model.onnx")
    assert (tmp_path / "model.onnx.data").stat().st_size >= weight.nbytes
    assert (tmp_path / "model.onnx").stat().st_size < weight.nbytes
    x = np.ones((3, 64), dtype=np.float32)
    (y,) = session_from_onnx(tmp_path / "model.onnx").run(None, {"x": x})
    np.testing.assert_allclose(y, x @ weight, rtol=1e-6)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="does not exist; run `sq-trt export` first"):
        session_from_onnx(tmp_path / "model.int8.onnx")


def test_unknown_sq_trt_node_is_refused_by_name() -> None:
    model, _ = _matmul_model()
    model.graph.node.insert(
        0, helper.make_node("Mystery", ["x"], ["x2"], name="odd", domain=plugin_spec.ONNX_DOMAIN)
    )
    with pytest.raises(ExportError, match="node 'odd' is sq_trt::Mystery"):
        expand_plugin_nodes(model)
