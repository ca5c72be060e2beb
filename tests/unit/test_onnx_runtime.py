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


def test_export_over_the_threshold_gives_two_self_contained_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With external data, each file loads on its own: the INT8 graph (made in place from the FP16
    one after that was saved) must not point into the FP16 file's data, and its float tensors
    (embedding, LM head) must be its own."""
    import shutil

    from sq_trt.export.stage import ExportConfig, export_model
    from sq_trt.models.loading import load_model

    monkeypatch.setattr(stage, "EXTERNAL_DATA_THRESHOLD", 0)
    loaded = load_model("tiny:llama")
    out = tmp_path / "export"
    export_model(loaded, out, config=ExportConfig(act_mode="per_token", encoding="portable"))
    for name in ("model.fp16.onnx", "model.int8.onnx"):
        proto = onnx.load(str(out / name), load_external_data=False)
        locations = {
            entry.value
            for tensor in proto.graph.initializer
            for entry in tensor.external_data
            if entry.key == "location"
        }
        assert locations == {f"{name}.data"}, (name, locations)
    # The INT8 file and its data alone, in another directory, run and give the same logits.
    alone = tmp_path / "alone"
    alone.mkdir()
    for name in ("model.int8.onnx", "model.int8.onnx.data"):
        shutil.copy(out / name, alone / name)
    ids = np.arange(12, dtype=np.int64).reshape(2, 6)
    (expected,) = session_from_onnx(out / "model.int8.onnx").run(None, {"input_ids": ids})
    (got,) = session_from_onnx(alone / "model.int8.onnx").run(None, {"input_ids": ids})
    np.testing.assert_array_equal(got, expected)
