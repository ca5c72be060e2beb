"""The fused-gemm nodes, as the CPU executor expands them, against sq_trt.quant.reference.

Single-node graphs, run by ONNX Runtime after :func:`sq_trt.runtime.onnx.expand_plugin_nodes`.
The GEMMs must be bit-exact with :func:`reference.w8a8_gemm` / :func:`reference.quant_w8a8_gemm`:
both sides compute the integer accumulator exactly (int64 there; here float32 MatMuls over at
most 1024 channels, whose sums stay within 2**24, added in float64, or one float64 MatMul when
the weight's K is not known), round it once to float32, and run the same float32
multiply/divide/add sequence, which IEEE rounds correctly on both sides. The norm + quantization
nodes are compared like the Triton kernels are (tests/unit/plugins/test_kernels_interp.py): the
float32 sums run in another order than torch's, so a code may move one step, and only where
the value sits within that rounding of a .5 tie.
"""

from __future__ import annotations

import zlib

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from sq_trt import plugin_spec
from sq_trt.errors import ExportError
from sq_trt.export.fused import plugin_node
from sq_trt.export.lint import find_qdq_problems
from sq_trt.quant import reference
from sq_trt.runtime.onnx import expand_plugin_nodes, session_from_onnx

ONNX_TYPES = {np.float32: TensorProto.FLOAT, np.float16: TensorProto.FLOAT16}
TORCH_TYPES = {np.float32: torch.float32, np.float16: torch.float16}


def _model(nodes: list, inputs: list, outputs: list, inits: dict[str, np.ndarray]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "fused",
        inputs,
        outputs,
        initializer=[numpy_helper.from_array(value, name) for name, value in inits.items()],
    )
    opsets = [helper.make_opsetid("", 20), helper.make_opsetid(plugin_spec.ONNX_DOMAIN, 1)]
    return helper.make_model(graph, opset_imports=opsets)


def _weights(rng: np.random.Generator, n: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    w = rng.standard_normal((n, k)).astype(np.float32) * np.logspace(-2, 1, n, dtype=np.float32)[:, None]
    w[0, :] = 0.0  # an all-zero output channel: scale 1, codes 0
    w_q, scale = reference.quantize_weight_per_channel(torch.from_numpy(w))
    bias = (rng.standard_normal(n) * 3).astype(np.float32)
    return w_q.numpy(), scale.numpy(), bias


def _gemm_case(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x_q [.., K] int8, w_q [N, K] int8, amax [.., 1] float32) for one named case."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    shapes = {"random": (2, 5, 64, 24), "odd": (1, 7, 33, 13), "single_token": (1, 1, 96, 17)}
    if name == "large_k":
        # Sums far beyond 2**24 (where float32 accumulation stops being exact), odd, mixed signs.
        b, s, k, n = 1, 3, 4099, 5
        x_q = rng.integers(100, 128, (b, s, k)).astype(np.int8)
        x_q[..., ::7] = -rng.integers(1, 128, x_q[..., ::7].shape).astype(np.int8)
        w_q = rng.integers(90, 128, (n, k)).astype(np.int8)
    else:
        b, s, k, n = shapes.get(name, (2, 4, 48, 16))
        x_q = rng.integers(-127, 128, (b, s, k)).astype(np.int8)
        w_q = rng.integers(-127, 128, (n, k)).astype(np.int8)
        if name == "outlier":
            x_q[..., 5] = 127
            w_q[:, 5] = -127
    amax = (rng.random((b, s, 1)) * 50 + 1e-3).astype(np.float32)
    amax[0, 0, 0] = 0.0  # an all-zero token's amax
    return x_q, w_q, amax


@pytest.mark.parametrize("case", ["random", "outlier", "odd", "single_token", "large_k"])
@pytest.mark.parametrize("np_dtype", [np.float32, np.float16])
@pytest.mark.parametrize("has_bias", [0, 1])
def test_w8a8_gemm_is_bit_exact_with_reference(case: str, np_dtype: type, has_bias: int) -> None:
    x_q, w_q, amax = _gemm_case(case)
    amax = amax.astype(np_dtype)
    rng = np.random.default_rng(1)
    scale = (rng.random(w_q.shape[0]) * 0.02 + 1e-4).astype(np.float32)
    bias = (rng.standard_normal(w_q.shape[0]) * 2).astype(np.float32)
    elem = ONNX_TYPES[np_dtype]
    node = plugin_node(
        plugin_spec.W8A8_GEMM, ["x_q", "amax", "w", "s", "b"], ["y"], "gemm", has_bias=has_bias
    )
    model = _model(
        [node],
        [
            helper.make_tensor_value_info("x_q", TensorProto.INT8, ["b", "s", w_q.shape[1]]),
            helper.make_tensor_value_info("amax", elem, ["b", "s", 1]),
        ],
        [helper.make_tensor_value_info("y", elem, ["b", "s", w_q.shape[0]])],
        {"w": w_q, "s": scale, "b": bias},
    )
    (y,) = session_from_onnx(model).run(None, {"x_q": x_q, "amax": amax})
    expected = reference.w8a8_gemm(
        torch.from_numpy(x_q),
        torch.from_numpy(amax),
        torch.from_numpy(w_q),
        torch.from_numpy(scale),
        torch.from_numpy(bias) if has_bias else None,
    )
    assert y.dtype == np_dtype
    np.testing.assert_array_equal(y, expected.numpy())
    assert np.all(y[0, 0] == (bias.astype(np_dtype) if has_bias else 0))  # amax 0 -> only the bias


@pytest.mark.parametrize("case", ["random", "large_k"])
def test_w8a8_gemm_with_a_weight_fed_at_run_time_is_bit_exact(case: str) -> None:
    """A weight that is no initializer has no K when the graph is rewritten: the float64 GEMM."""
    x_q, w_q, amax = _gemm_case(case)
    scale = np.full(w_q.shape[0], 0.01, dtype=np.float32)
    node = plugin_node(plugin_spec.W8A8_GEMM, ["x_q", "amax", "w", "s", "b"], ["y"], "gemm", has_bias=0)
    model = _model(
        [node],
        [
            helper.make_tensor_value_info("x_q", TensorProto.INT8, ["b", "s", w_q.shape[1]]),
            helper.make_tensor_value_info("amax", TensorProto.FLOAT, ["b", "s", 1]),
            helper.make_tensor_value_info("w", TensorProto.INT8, list(w_q.shape)),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", w_q.shape[0]])],
        {"s": scale, "b": np.zeros(w_q.shape[0], dtype=np.float32)},
    )
    (y,) = session_from_onnx(model).run(None, {"x_q": x_q, "amax": amax, "w": w_q})
    expected = reference.w8a8_gemm(
        torch.from_numpy(x_q), torch.from_numpy(amax), torch.from_numpy(w_q), torch.from_numpy(scale), None
    )
    np.testing.assert_array_equal(y, expected.numpy())


def test_large_k_case_needs_more_than_float32_accumulation() -> None:
    """Guards the large-K case: its exact sums do not survive float32 accumulation."""
    x_q, w_q, _ = _gemm_case("large_k")
    exact = x_q.astype(np.int64) @ w_q.astype(np.int64).T
    assert np.abs(exact).max() > 2**24
    partial = np.zeros(exact.shape, dtype=np.float32)
    for j in range(x_q.shape[-1]):  # sequential float32 accumulation, as a float32 GEMM could do
        partial += x_q[..., j].astype(np.float32)[..., None] * w_q[:, j].astype(np.float32)
    assert np.any(partial.astype(np.int64) != exact)


def _hard_rows(np_dtype: type, k: int = 96) -> np.ndarray:
    rng = np.random.default_rng(0)
    rows = [rng.standard_normal(k) * scale for scale in (1e-3, 1.0, 40.0)]
    rows.append(np.zeros(k))  # all-zero token
    outlier = rng.standard_normal(k)
    outlier[7] = 500.0
    rows.append(outlier)
    ties = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -126.5] * (k // 8))
    ties[0] = 127.0  # amax 127: scale 1, so the .5 values are exact ties
    rows.append(ties)
    return np.stack(rows).astype(np_dtype)[None]  # [1, rows, k]


@pytest.mark.parametrize("np_dtype", [np.float32, np.float16])
@pytest.mark.parametrize(("has_smooth", "has_bias"), [(0, 0), (1, 1), (0, 1)])
def test_quant_w8a8_gemm_is_bit_exact_with_reference(np_dtype: type, has_smooth: int, has_bias: int) -> None:
    rng = np.random.default_rng(2)
    x = _hard_rows(np_dtype)
    w_q, scale, bias = _weights(rng, 24, x.shape[-1])
    smooth = (rng.random(x.shape[-1]) * 4 + 0.25).astype(np.float32)
    smooth[5] = 1.0  # keeps the tie row's .5 values exact under smoothing at two channels
    elem = ONNX_TYPES[np_dtype]
    node = plugin_node(
        plugin_spec.QUANT_W8A8_GEMM,
        ["x", "smooth", "w", "s", "b"],
        ["y"],
        "qgemm",
        has_smooth=has_smooth,
        has_bias=has_bias,
    )
    model = _model(
        [node],
        [helper.make_tensor_value_info("x", elem, ["b", "s", x.shape[-1]])],
        [helper.make_tensor_value_info("y", elem, ["b", "s", w_q.shape[0]])],
        {"smooth": smooth, "w": w_q, "s": scale, "b": bias},
    )
    (y,) = session_from_onnx(model).run(None, {"x": x})
    expected = reference.quant_w8a8_gemm(
        torch.from_numpy(x),
        torch.from_numpy(w_q),
        torch.from_numpy(scale),
        torch.from_numpy(bias) if has_bias else None,
        smooth=torch.from_numpy(smooth) if has_smooth else None,
    )
    assert y.dtype == np_dtype
    np.testing.assert_array_equal(y, expected.numpy())
    assert np.all(np.isfinite(y))


def _norm_reference(kind: str, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    """The kernels' float32 formulas (plugins/kernels.py), written with torch."""
    xf = x.float()
    if kind == "rmsnorm":
        return xf * (1.0 / torch.sqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)) * w.float()
    d = xf - xf.mean(dim=-1, keepdim=True)
    return d * (1.0 / torch.sqrt((d * d).mean(dim=-1, keepdim=True) + eps)) * w.float() + b.float()


@pytest.mark.parametrize("kind", ["rmsnorm", "layernorm"])
@pytest.mark.parametrize("np_dtype", [np.float32, np.float16])
def test_norm_quant_nodes_match_reference(kind: str, np_dtype: type) -> None:
    rng = np.random.default_rng(3)
    x = _hard_rows(np_dtype, k=256) + np_dtype(0.25)  # non-zero mean for the LayerNorm
    x[0, 3] = 0.0  # a constant row (all zeros): the norm gives 0 (or the bias), no NaN
    w = (rng.random(256) * 2 + 0.1).astype(np_dtype)
    b = (rng.standard_normal(256) * 0.1).astype(np_dtype)
    eps = 1e-5
    op = plugin_spec.RMSNORM_PER_TOKEN_QUANT if kind == "rmsnorm" else plugin_spec.LAYERNORM_PER_TOKEN_QUANT
    inputs = ["x", "w"] + (["b"] if kind == "layernorm" else [])
    elem = ONNX_TYPES[np_dtype]
    model = _model(
        [plugin_node(op, inputs, ["x_q", "amax"], "norm", epsilon=eps)],
        [helper.make_tensor_value_info("x", elem, ["b", "s", 256])],
        [
            helper.make_tensor_value_info("x_q", TensorProto.INT8, ["b", "s", 256]),
            helper.make_tensor_value_info("amax", elem, ["b", "s", 1]),
        ],
        {"w": w, "b": b} if kind == "layernorm" else {"w": w},
    )
    x_q, amax = session_from_onnx(model).run(None, {"x": x})
    y = _norm_reference(kind, torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), eps)
    ref_q, ref_amax = reference.quantize_per_token(y)
    assert x_q.dtype == np.int8 and amax.dtype == np_dtype
    rel = (256 + 8) * 2.0**-24  # float32 sums of K terms in another order, plus a few roundings
    np.testing.assert_allclose(
        amax.astype(np.float32),
        ref_amax.to(TORCH_TYPES[np_dtype]).float().numpy(),
        rtol=np.finfo(np_dtype).eps + rel,
    )
    diff = np.abs(x_q.astype(np.int32) - ref_q.numpy().astype(np.int32))
    v = (y * (127 / ref_amax.clamp(min=1e-30))).numpy()
    near_tie = np.abs((v - np.floor(v)) - 0.5) <= 127 * 2 * rel + 1e-6
    assert diff.max() <= 1 and bool(np.all((diff == 0) | near_tie))
    assert np.mean(diff > 0) < 0.01


def test_expansion_leaves_standard_ops_only() -> None:
    rng = np.random.default_rng(4)
    w_q, scale, bias = _weights(rng, 8, 16)
    nodes = [
        plugin_node(plugin_spec.RMSNORM_PER_TOKEN_QUANT, ["x", "g"], ["x_q", "amax"], "norm", epsilon=1e-6),
        plugin_node(plugin_spec.W8A8_GEMM, ["x_q", "amax", "w", "s", "b"], ["y"], "gemm", has_bias=1),
        plugin_node(
            plugin_spec.QUANT_W8A8_GEMM,
            ["y", "ones", "w2", "s", "b"],
            ["z"],
            "qgemm",
            has_smooth=0,
            has_bias=0,
        ),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["m", 16])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT16, ["m", 8])],
        {
            "g": np.ones(16, np.float16),
            "w": w_q,
            "s": scale,
            "b": bias,
            "ones": np.ones(8, np.float32),
            "w2": w_q[:, :8].copy(),
        },
    )
    assert find_qdq_problems(model) == []
    assert expand_plugin_nodes(model) == 3
    assert all(node.domain in ("", "ai.onnx") for node in model.graph.node)
    assert not any(node.op_type in ("MatMulInteger", "QLinearMatMul") for node in model.graph.node)
    onnx.checker.check_model(model)
    (z,) = session_from_onnx(model).run(None, {"x": rng.standard_normal((3, 16)).astype(np.float16)})
    assert z.shape == (3, 8) and z.dtype == np.float16


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda n: n.input.pop(), r"has 4 inputs and 1 outputs, expected 5 and 1"),
        (
            lambda n: next(a for a in n.attribute if a.name == "has_bias").CopyFrom(
                helper.make_attribute("has_bias", 2)
            ),
            r"has_bias=2, expected the int 0 or 1",
        ),
    ],
)
def test_malformed_gemm_node_is_refused_by_the_executor(mutate, message: str) -> None:
    node = plugin_node(plugin_spec.W8A8_GEMM, ["x_q", "amax", "w", "s", "b"], ["y"], "gemm", has_bias=0)
    mutate(node)
    model = _model(
        [node],
        [helper.make_tensor_value_info("x_q", TensorProto.INT8, ["m", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", 2])],
        {"w": np.ones((2, 4), np.int8), "s": np.ones(2, np.float32), "b": np.zeros(2, np.float32)},
    )
    with pytest.raises(ExportError, match=message):
        expand_plugin_nodes(model)
