"""The CPU executor: files with external data, missing files, and sq_trt nodes it cannot run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from sq_trt import plugin_spec
from sq_trt.errors import ExportError
from sq_trt.export import onnx_files
from sq_trt.runtime.onnx import expand_plugin_nodes, session_from_onnx, session_options


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
    monkeypatch.setattr(onnx_files, "EXTERNAL_DATA_THRESHOLD", 0)
    onnx_files.save_onnx(model, tmp_path / "model.onnx")
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

    monkeypatch.setattr(onnx_files, "EXTERNAL_DATA_THRESHOLD", 0)
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


INTEGER_KERNELS = {"MatMulIntegerToFloat", "MatMulInteger", "QLinearMatMul", "DynamicQuantizeMatMul"}


def _per_tensor_qdq_matmul(
    m: int = 4, k: int = 256, n: int = 16
) -> tuple[onnx.ModelProto, np.ndarray, np.ndarray]:
    """``Q/DQ(x) @ DQ(W)``: static per-tensor activation, per-channel int8 weight (an exported linear).

    Returns the model, the exact result and its feed ``x``: with x = q_x * s_x
    chosen on the grid, the graph's value is ``(q_x @ q_w) * s_x * s_w`` with an
    int32 dot product. The activations sit at +-127 and the weights at +-127 so
    adjacent products add up past 2^15, where a u8s8 16-bit pair sum saturates.
    """
    rng = np.random.default_rng(3)
    q_x = rng.choice(np.array([-127, 127], dtype=np.int32), size=(m, k))
    q_w = (np.sign(q_x[0])[:, None] * 127 * rng.choice([1, 1, 1, -1], size=(k, n))).astype(np.int8)
    s_x, s_w = np.float32(0.5), np.full(n, 0.25, dtype=np.float32)
    x = (q_x * s_x).astype(np.float32)
    exact = (q_x @ q_w.astype(np.int32)).astype(np.float64) * float(s_x) * s_w.astype(np.float64)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s_x", "zp"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "s_x", "zp"], ["x_dq"]),
        helper.make_node("DequantizeLinear", ["w_q", "s_w"], ["w_dq"], axis=1),
        helper.make_node("MatMul", ["x_dq", "w_dq"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq_mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
        initializer=[
            numpy_helper.from_array(np.array(s_x), "s_x"),
            numpy_helper.from_array(np.array(0, dtype=np.int8), "zp"),
            numpy_helper.from_array(q_w, "w_q"),
            numpy_helper.from_array(s_w, "s_w"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), exact, x


def _optimized_ops(model: onnx.ModelProto, options: object, path: Path) -> set[str]:
    import onnxruntime as ort

    options.optimized_model_filepath = str(path)  # type: ignore[attr-defined]
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_runner_keeps_qdq_out_of_onnx_runtime_integer_kernels(tmp_path: Path) -> None:
    """ONNX Runtime's own defaults fuse the pattern into an integer kernel; the runner's options do not."""
    import onnxruntime as ort

    model, _, _ = _per_tensor_qdq_matmul()
    default_ops = _optimized_ops(model, ort.SessionOptions(), tmp_path / "default.onnx")
    assert default_ops & INTEGER_KERNELS, (
        f"the control no longer fuses ({default_ops}); this test proves nothing"
    )
    runner_ops = _optimized_ops(model, session_options(), tmp_path / "runner.onnx")
    assert not runner_ops & INTEGER_KERNELS, runner_ops
    assert "MatMul" in runner_ops


def test_per_tensor_qdq_matmul_equals_int32_arithmetic() -> None:
    """Sums past 2^15 (which a saturating u8s8 kernel clips on AVX2 CPUs without VNNI) come out exact.

    Every |value| is at most 256 * 127 * 127 * 0.125 ~ 5.2e5, products of grid
    points; float32 represents the partial sums exactly, so the comparison is exact.
    """
    model, exact, x = _per_tensor_qdq_matmul()
    (y,) = session_from_onnx(model).run(None, {"x": x})
    np.testing.assert_array_equal(y.astype(np.float64), exact)
