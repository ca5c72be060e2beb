"""The ONNX encodings of INT8 quantization are bit-exact with sq_trt.quant.reference.

These are the building blocks every exported graph is made of: the portable
per-token subgraph, the plugin node as the CPU executor expands it, and the
per-channel weight DequantizeLinear. Exact equality is the right bar: both
sides compute the same float32 operations (``x * (127 / amax)``, round half to
even, clamp), and IEEE float32 multiply/divide are correctly rounded in both.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from sq_trt import plugin_spec
from sq_trt.export.qdq import GraphBuilder, plugin_per_token_node, portable_per_token_nodes
from sq_trt.quant import reference
from sq_trt.runtime.onnx import expand_plugin_nodes, session_from_onnx

ONNX_TYPES = {np.float32: TensorProto.FLOAT, np.float16: TensorProto.FLOAT16}


def _per_token_model(np_dtype: type, encoding: str) -> onnx.ModelProto:
    elem = ONNX_TYPES[np_dtype]
    builder = GraphBuilder(elem)
    if encoding == "portable":
        nodes = portable_per_token_nodes("x", "x_q", "amax", "pt", builder, x_dtype=elem)
    else:
        nodes = [plugin_per_token_node("x", "x_q", "amax", "plugin")]
    graph = helper.make_graph(
        nodes,
        "per_token",
        [helper.make_tensor_value_info("x", elem, ["rows", "k"])],
        [
            helper.make_tensor_value_info("x_q", TensorProto.INT8, ["rows", "k"]),
            helper.make_tensor_value_info("amax", elem, ["rows", 1]),
        ],
        initializer=builder.initializers,
    )
    opsets = [helper.make_opsetid("", 20), helper.make_opsetid(plugin_spec.ONNX_DOMAIN, 1)]
    return helper.make_model(graph, opset_imports=opsets)


def _hard_inputs(np_dtype: type) -> np.ndarray:
    """Random rows plus the cases that break naive implementations."""
    rng = np.random.default_rng(0)
    rows = [rng.standard_normal(96) * scale for scale in (1e-3, 1.0, 40.0)]
    rows.append(np.zeros(96))  # all-zero token: amax 0, must give zeros and no NaN
    outlier = rng.standard_normal(96)
    outlier[7] = 500.0  # one outlier channel, the SmoothQuant situation
    rows.append(outlier)
    # Exact ties: amax 127 makes the scale 1, so k + 0.5 must round half to even.
    ties = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -126.5] * 12)
    ties[0] = 127.0
    rows.append(ties)
    rows.append(np.full(96, -3.0))  # negative amax side
    return np.stack(rows).astype(np_dtype)


@pytest.mark.parametrize("np_dtype", [np.float32, np.float16])
@pytest.mark.parametrize("encoding", ["portable", "plugin"])
def test_per_token_graph_is_bit_exact_with_reference(np_dtype: type, encoding: str) -> None:
    model = _per_token_model(np_dtype, encoding)
    x = _hard_inputs(np_dtype)
    x_q, amax = session_from_onnx(model).run(None, {"x": x})
    ref_q, ref_amax = reference.quantize_per_token(torch.from_numpy(x))
    assert x_q.dtype == np.int8 and amax.dtype == np_dtype
    np.testing.assert_array_equal(x_q, ref_q.numpy())
    np.testing.assert_array_equal(amax.astype(np.float32), ref_amax.numpy())
    assert np.all(x_q[3] == 0) and np.all(np.isfinite(amax))
    assert list(x_q[5, 1:8]) == [2, 2, 0, -2, -2, 126, -126]  # half to even, not half away from zero


def test_expand_plugin_nodes_leaves_standard_ops_only() -> None:
    model = _per_token_model(np.float16, "plugin")
    assert expand_plugin_nodes(model) == 1
    assert all(node.domain in ("", "ai.onnx") for node in model.graph.node)
    assert all(entry.domain != plugin_spec.ONNX_DOMAIN for entry in model.opset_import)
    onnx.checker.check_model(model)


def test_weight_dequantize_per_channel_matches_reference() -> None:
    """The int8 [K, N] initializer with DQ(axis=1) reproduces reference W_q * s for W[N, K]."""
    torch.manual_seed(0)
    weight = torch.randn(24, 40) * torch.logspace(-2, 1, 24)[:, None]  # rows of very different ranges
    w_q, scale = reference.quantize_weight_per_channel(weight)
    kn = w_q.numpy().T.copy()
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["w", "s"], ["y"], axis=1)],
        "dq",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [40, 24])],
        initializer=[onnx.numpy_helper.from_array(kn, "w"), onnx.numpy_helper.from_array(scale.numpy(), "s")],
    )
    (y,) = session_from_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])).run(
        None, {}
    )
    np.testing.assert_array_equal(y.T, reference.dequantize(w_q, scale[:, None]).numpy())


@pytest.mark.parametrize("np_dtype", [np.float32, np.float16])
@pytest.mark.parametrize("amax", [127.0, 3.7, 1e-3])
def test_per_tensor_quantize_linear_is_bit_exact_with_reference(np_dtype: type, amax: float) -> None:
    """ONNX Runtime's QuantizeLinear (the per-tensor encoding) against reference.quantize_per_tensor.

    The scale constant is built the way the exporter builds it (the reference's float32 scale, rounded
    to the graph dtype), and the inputs include values far beyond ``amax`` on both sides, so the
    [-128, 127] saturation is exercised, and (at amax 127, scale 1) exact .5 ties.
    """
    from sq_trt.quant.reference import per_tensor_scale

    elem = ONNX_TYPES[np_dtype]
    builder = GraphBuilder(elem)
    scale = builder.act_const("scale", per_tensor_scale(amax).numpy())
    zero = builder.const("zero", np.array(0, dtype=np.int8))
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", scale, zero], ["x_q"])],
        "per_tensor",
        [helper.make_tensor_value_info("x", elem, ["rows", "k"])],
        [helper.make_tensor_value_info("x_q", TensorProto.INT8, ["rows", "k"])],
        initializer=builder.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    x = _hard_inputs(np.float32) * np.float32(amax / 40.0)  # rows span ~1e-3x to ~12x amax (outlier row)
    x[-1] = -x[-1] * 50  # a row far beyond +amax
    if amax == 127.0:
        x[5] = _hard_inputs(np.float32)[5]  # exact ties at scale 1
    x = x.astype(np_dtype)
    (x_q,) = session_from_onnx(model).run(None, {"x": x})
    torch_dtype = torch.float16 if np_dtype == np.float16 else None
    ref = reference.quantize_per_tensor(torch.from_numpy(x), amax, scale_dtype=torch_dtype)
    np.testing.assert_array_equal(x_q, ref.numpy())
    assert x_q.min() == -128 and x_q.max() == 127  # saturation on both sides was exercised
