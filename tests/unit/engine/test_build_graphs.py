"""Small ONNX graphs the build tests feed to TensorRT-RTX, and proof that they compute what they claim.

Three encodings of one linear layer ``y = x W`` (``x`` fp16 ``[batch, seq, K]``):

* ``fp16``: plain fp16 MatMul (the baseline's precision);
* ``per_tensor``: static INT8 Q/DQ on ``x`` and per-channel INT8 DQ weights;
* ``per_token``: the portable per-token encoding from DESIGN.md (Abs, ReduceMax,
  Max(eps), Div, Round, Clip, Cast int8, DequantizeLinear 1/127, MatMul with
  per-channel DQ weights, Mul by amax), no plugin.

Each graph is checked here against an independent NumPy computation of its
formula through ONNX Runtime, so a build test that builds it builds a graph
known to be right.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from sq_trt.quant.reference import quantize_per_token, quantize_weight_per_channel

K, N = 64, 32
OPSET = 20


def _weights(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((N, K)).astype(np.float32)
    w_q, scale = quantize_weight_per_channel(torch.from_numpy(w))
    return w, w_q.numpy(), scale.numpy()


def _io(extra_outputs: list[onnx.ValueInfoProto] | None = None):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["batch", "seq", K])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["batch", "seq", N])
    return [x], [y, *(extra_outputs or [])]


def _save(nodes, inputs, outputs, inits, path: Path) -> Path:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _weight_dq(nodes: list, inits: list) -> str:
    _, w_q, scale = _weights()
    # ONNX MatMul wants W[K, N]; per-output-channel scales then run along axis 1.
    inits += [
        numpy_helper.from_array(np.ascontiguousarray(w_q.T), "w_q"),
        numpy_helper.from_array(scale.astype(np.float16), "w_scale"),
    ]
    nodes.append(helper.make_node("DequantizeLinear", ["w_q", "w_scale"], ["w"], name="dq_w", axis=1))
    return "w"


def make_fp16(path: Path) -> Path:
    """fp16 ``y = x W``."""
    w, _, _ = _weights()
    inputs, outputs = _io()
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="matmul")]
    return _save(nodes, inputs, outputs, [numpy_helper.from_array(w.T.astype(np.float16), "w")], path)


def make_per_tensor(path: Path, amax: float = 3.0) -> Path:
    """Static per-tensor INT8 activations (scale ``amax/127``), per-channel INT8 weights."""
    inputs, outputs = _io()
    inits = [
        numpy_helper.from_array(np.array(amax / 127, dtype=np.float16), "x_scale"),
        numpy_helper.from_array(np.array(0, dtype=np.int8), "x_zero"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["x_q"], name="q_x"),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zero"], ["x_dq"], name="dq_x"),
    ]
    w = _weight_dq(nodes, inits)
    nodes.append(helper.make_node("MatMul", ["x_dq", w], ["y"], name="matmul"))
    return _save(nodes, inputs, outputs, inits, path)


def make_per_token(path: Path, *, expose_int8: bool = False) -> Path:
    """Portable per-token INT8 (standard ops only); ``expose_int8`` adds ``x_q`` as an output."""
    extra = (
        [helper.make_tensor_value_info("x_q", TensorProto.INT8, ["batch", "seq", K])] if expose_int8 else []
    )
    inputs, outputs = _io(extra)
    inits = [
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "last_axis"),
        numpy_helper.from_array(np.array(1e-30, dtype=np.float32), "eps"),
        numpy_helper.from_array(np.array(127.0, dtype=np.float32), "qmax"),
        numpy_helper.from_array(np.array(-127.0, dtype=np.float32), "qmin"),
        numpy_helper.from_array(np.array(1 / 127, dtype=np.float16), "dq_scale"),
    ]
    nodes = [
        helper.make_node("Cast", ["x"], ["x32"], to=TensorProto.FLOAT, name="cast_x"),
        helper.make_node("Abs", ["x32"], ["x_abs"], name="abs"),
        helper.make_node("ReduceMax", ["x_abs", "last_axis"], ["amax"], keepdims=1, name="amax"),
        helper.make_node("Max", ["amax", "eps"], ["amax_safe"], name="amax_safe"),
        helper.make_node("Div", ["qmax", "amax_safe"], ["inv"], name="inv"),
        helper.make_node("Mul", ["x32", "inv"], ["x_scaled"], name="scale"),
        helper.make_node("Round", ["x_scaled"], ["x_round"], name="round"),
        helper.make_node("Clip", ["x_round", "qmin", "qmax"], ["x_clip"], name="clip"),
        helper.make_node("Cast", ["x_clip"], ["x_q"], to=TensorProto.INT8, name="to_int8"),
        helper.make_node("DequantizeLinear", ["x_q", "dq_scale"], ["x_unit"], name="dq_x"),
    ]
    w = _weight_dq(nodes, inits)
    nodes += [
        helper.make_node("MatMul", ["x_unit", w], ["y_unit"], name="matmul"),
        helper.make_node("Cast", ["amax"], ["amax16"], to=TensorProto.FLOAT16, name="cast_amax"),
        helper.make_node("Mul", ["y_unit", "amax16"], ["y"], name="rescale"),
    ]
    return _save(nodes, inputs, outputs, inits, path)


GRAPHS = {"fp16": make_fp16, "per_tensor": make_per_tensor, "per_token": make_per_token}


def _run_ort(path: Path, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def _sample(seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 5, K)).astype(np.float32)
    x[0, 1, 3] = 40.0  # an outlier channel, the case per-token quantization is for
    x[1, 2] = 0.0  # an all-zero token must quantize to zeros, not NaN
    return x.astype(np.float16)


def test_per_token_graph_int8_is_bit_exact_with_reference(tmp_path):
    x = _sample()
    _, x_q = _run_ort(make_per_token(tmp_path / "pt.onnx", expose_int8=True), x)
    ref_q, _ = quantize_per_token(torch.from_numpy(x.astype(np.float32)))
    np.testing.assert_array_equal(x_q, ref_q.numpy())
    assert not np.any(x_q[1, 2])


def test_per_token_graph_output_matches_formula(tmp_path):
    x = _sample()
    (y,) = _run_ort(make_per_token(tmp_path / "pt.onnx"), x)
    _, w_q, scale = _weights()
    ref_q, amax = quantize_per_token(torch.from_numpy(x.astype(np.float32)))
    expected = (ref_q.numpy() / 127.0) @ (w_q * scale[:, None]).T * amax.numpy()
    # fp16 scales and fp16 MatMul accumulation: relative error ~1e-3 of the output's magnitude.
    np.testing.assert_allclose(y.astype(np.float32), expected, rtol=2e-2, atol=2e-2 * np.abs(expected).max())
    assert not np.isnan(y).any()


def test_per_tensor_graph_matches_formula(tmp_path):
    x = _sample()
    amax = 3.0
    (y,) = _run_ort(make_per_tensor(tmp_path / "pt.onnx", amax=amax), x)
    _, w_q, scale = _weights()
    s16 = float(np.float16(amax / 127))  # the graph stores its scale in fp16
    x_q = np.clip(np.round(x.astype(np.float32) / s16), -128, 127)
    expected = (x_q * s16) @ (w_q * scale[:, None]).T
    np.testing.assert_allclose(y.astype(np.float32), expected, rtol=2e-2, atol=2e-2 * np.abs(expected).max())


def test_fp16_graph_matches_numpy(tmp_path):
    x = _sample()
    (y,) = _run_ort(make_fp16(tmp_path / "fp.onnx"), x)
    w, _, _ = _weights()
    expected = x.astype(np.float32) @ w.astype(np.float16).astype(np.float32).T
    np.testing.assert_allclose(y.astype(np.float32), expected, rtol=1e-2, atol=5e-2)


@pytest.mark.parametrize("kind", sorted(GRAPHS))
def test_graphs_have_dynamic_batch_and_sequence(tmp_path, kind):
    model = onnx.load(str(GRAPHS[kind](tmp_path / f"{kind}.onnx")))
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "seq", K]
