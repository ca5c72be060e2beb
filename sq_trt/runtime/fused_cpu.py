"""Standard-op equivalents of the fused ``sq_trt`` nodes, for the CPU executor (ONNX Runtime).

Each builder returns the nodes computing one node of :mod:`sq_trt.plugin_spec` with the
semantics of :mod:`sq_trt.quant.reference`:

* the integer GEMM is exact: float32 holds every integer up to ``2**24``, and an int8
  product is at most ``128 * 128 = 2**14`` in size, so a float32 MatMul over at most
  :data:`EXACT_FLOAT32_K` = 1024 input channels has every product and partial sum exact,
  whatever the summation order. A longer K is cut into such chunks, each chunk's exact
  float32 sum is added in float64 (exact: integers below ``2**53``), then one cast rounds
  to float32, as a single float64 GEMM would. Measured on SmolLM2-135M in ONNX Runtime: the
  float64 GEMM of the earlier version took 2.2x the float32 one ([1024, 576] x [576, 1536]:
  22 vs 10 ms). A weight that is not an initializer (its K unknown when the graph is
  rewritten) takes the float64 GEMM. ONNX Runtime's integer kernels are not used:
  ``MatMulInteger`` saturates 16-bit pair sums on CPUs without VNNI (see
  :func:`sq_trt.runtime.onnx.session_options`);
* the epilogue is float32, in the reference's order, ``(acc * (amax / 127)) * w_scale + bias``,
  then one cast to the output dtype;
* the norms compute in float32 as the kernels do, ``x * (1 / sqrt(mean(x^2) + eps)) * w``
  and ``(x - mean) * (1 / sqrt(var + eps)) * w + b``, and quantize what they computed,
  never a copy rounded to the input dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sq_trt import plugin_spec
from sq_trt.errors import ExportError
from sq_trt.export.graph import GraphBuilder, _attr
from sq_trt.export.qdq import portable_per_token_nodes
from sq_trt.quant.intgemm import EXACT_FLOAT32_K
from sq_trt.quant.reference import QMAX

_FLOAT = 1  # onnx.TensorProto.FLOAT
_DOUBLE = 11  # onnx.TensorProto.DOUBLE


class _Emitter:
    """Appends nodes with names unique in the graph under one prefix."""

    def __init__(self, node: Any, builder: GraphBuilder) -> None:
        self.builder = builder
        self.prefix = f"{node.name or node.output[0]}/cpu"
        self.nodes: list[Any] = []

    def add(self, op_type: str, inputs: list[str], out: str | None = None, **attrs: Any) -> str:
        from onnx.helper import make_node

        out = out or self.builder.unique(f"{self.prefix}/{op_type}_out")
        self.nodes.append(
            make_node(op_type, inputs, [out], name=self.builder.unique(f"{self.prefix}/{op_type}"), **attrs)
        )
        return out

    def scalar(self, name: str, value: float) -> str:
        import numpy as np

        return self.builder.const(f"{self.prefix}/{name}", np.array(value, dtype=np.float32))

    def axes(self) -> str:
        import numpy as np

        return self.builder.const(f"{self.prefix}/axes", np.array([-1], dtype=np.int64))

    def ints(self, name: str, values: list[int]) -> str:
        import numpy as np

        return self.builder.const(f"{self.prefix}/{name}", np.array(values, dtype=np.int64))


def _check_arity(node: Any, inputs: int, outputs: int, signature: str) -> None:
    if len(node.input) != inputs or len(node.output) != outputs or not all(node.input):
        raise ExportError(
            f"{node.op_type} node {node.name!r} has {len(node.input)} inputs and {len(node.output)} outputs, "
            f"expected {inputs} and {outputs} ({signature}); re-export the model with this sq-trt version"
        )


def _flag(node: Any, name: str) -> bool:
    value = _attr(node, name, None)
    if value not in (0, 1):
        raise ExportError(f"{node.op_type} node {node.name!r} has {name}={value!r}, expected the int 0 or 1")
    return bool(value)


def _epsilon(node: Any) -> float:
    value = _attr(node, "epsilon", None)
    if not isinstance(value, float) or not value > 0:
        raise ExportError(
            f"{node.op_type} node {node.name!r} has epsilon={value!r}, expected a positive float"
        )
    return value


def _quantize(emit: _Emitter, y32: str, x_q: str, amax: str, like: str) -> None:
    """Per-token quantization of the float32 ``y32``: ``x_q`` and ``amax`` in ``like``'s dtype."""
    amax32 = emit.builder.unique(f"{emit.prefix}/amax_f32")
    emit.nodes.extend(
        portable_per_token_nodes(y32, x_q, amax32, f"{emit.prefix}/quant", emit.builder, x_dtype=_FLOAT)
    )
    emit.add("CastLike", [amax32, like], amax)


def rmsnorm_quant_nodes(node: Any, builder: GraphBuilder) -> list[Any]:
    """``RMSNormPerTokenQuant(x, weight; epsilon) -> (x_q, amax)`` in standard ops."""
    _check_arity(node, 2, 2, "x, weight -> x_q, amax")
    emit = _Emitter(node, builder)
    x, weight = node.input
    x32 = emit.add("Cast", [x], to=_FLOAT)
    mean_sq = emit.add("ReduceMean", [emit.add("Mul", [x32, x32]), emit.axes()], keepdims=1)
    rms = emit.add("Sqrt", [emit.add("Add", [mean_sq, emit.scalar("eps", _epsilon(node))])])
    rstd = emit.add("Div", [emit.scalar("one", 1.0), rms])
    y32 = emit.add("Mul", [emit.add("Mul", [x32, rstd]), emit.add("Cast", [weight], to=_FLOAT)])
    _quantize(emit, y32, node.output[0], node.output[1], x)
    return emit.nodes


def layernorm_quant_nodes(node: Any, builder: GraphBuilder) -> list[Any]:
    """``LayerNormPerTokenQuant(x, weight, bias; epsilon) -> (x_q, amax)`` in standard ops."""
    _check_arity(node, 3, 2, "x, weight, bias -> x_q, amax")
    emit = _Emitter(node, builder)
    x, weight, bias = node.input
    x32 = emit.add("Cast", [x], to=_FLOAT)
    d = emit.add("Sub", [x32, emit.add("ReduceMean", [x32, emit.axes()], keepdims=1)])
    var = emit.add("ReduceMean", [emit.add("Mul", [d, d]), emit.axes()], keepdims=1)
    rms = emit.add("Sqrt", [emit.add("Add", [var, emit.scalar("eps", _epsilon(node))])])
    rstd = emit.add("Div", [emit.scalar("one", 1.0), rms])
    scaled = emit.add("Mul", [emit.add("Mul", [d, rstd]), emit.add("Cast", [weight], to=_FLOAT)])
    y32 = emit.add("Add", [scaled, emit.add("Cast", [bias], to=_FLOAT)])
    _quantize(emit, y32, node.output[0], node.output[1], x)
    return emit.nodes


def _exact_accumulator(emit: _Emitter, x_q: str, weight: str) -> str:
    """``float32(x_q @ weight^T)``, the exact integer sum rounded once (see the module docstring)."""
    dims = emit.builder.initializer_dims.get(weight)
    if dims is None or len(dims) != 2:
        w_t = emit.add("Transpose", [emit.add("Cast", [weight], to=_DOUBLE)], perm=[1, 0])
        return emit.add("Cast", [emit.add("MatMul", [emit.add("Cast", [x_q], to=_DOUBLE), w_t])], to=_FLOAT)
    k = int(dims[1])
    x32 = emit.add("Cast", [x_q], to=_FLOAT)
    w_t = emit.add("Transpose", [emit.add("Cast", [weight], to=_FLOAT)], perm=[1, 0])
    if k <= EXACT_FLOAT32_K:
        return emit.add("MatMul", [x32, w_t])
    total = None
    for start in range(0, k, EXACT_FLOAT32_K):
        bounds = [emit.ints("k_start", [start]), emit.ints("k_end", [min(start + EXACT_FLOAT32_K, k)])]
        x_part = emit.add("Slice", [x32, *bounds, emit.axes()])
        w_part = emit.add("Slice", [w_t, *bounds, emit.ints("k_axis", [0])])
        part = emit.add("Cast", [emit.add("MatMul", [x_part, w_part])], to=_DOUBLE)
        total = part if total is None else emit.add("Add", [total, part])
    assert total is not None
    return emit.add("Cast", [total], to=_FLOAT)


def _gemm(
    emit: _Emitter, x_q: str, amax: str, weight: str, scale: str, bias: str | None, y: str, like: str
) -> None:
    """``y = CastLike((float32(x_q @ weight^T) * (float32(amax) / 127)) * scale (+ bias), like)``."""
    acc = _exact_accumulator(emit, x_q, weight)
    token_scale = emit.add("Div", [emit.add("Cast", [amax], to=_FLOAT), emit.scalar("qmax", float(QMAX))])
    out = emit.add("Mul", [emit.add("Mul", [acc, token_scale]), emit.add("Cast", [scale], to=_FLOAT)])
    if bias is not None:
        out = emit.add("Add", [out, emit.add("Cast", [bias], to=_FLOAT)])
    emit.add("CastLike", [out, like], y)


def w8a8_gemm_nodes(node: Any, builder: GraphBuilder) -> list[Any]:
    """``W8A8Gemm(x_q, amax, weight, w_scale, bias; has_bias) -> y`` in standard ops."""
    _check_arity(node, 5, 1, "x_q, amax, weight, w_scale, bias -> y")
    emit = _Emitter(node, builder)
    x_q, amax, weight, scale, bias = node.input
    _gemm(emit, x_q, amax, weight, scale, bias if _flag(node, "has_bias") else None, node.output[0], amax)
    return emit.nodes


def quant_w8a8_gemm_nodes(node: Any, builder: GraphBuilder) -> list[Any]:
    """``QuantW8A8Gemm(x, smooth, weight, w_scale, bias; has_smooth, has_bias) -> y`` in standard ops."""
    _check_arity(node, 5, 1, "x, smooth, weight, w_scale, bias -> y")
    emit = _Emitter(node, builder)
    x, smooth, weight, scale, bias = node.input
    xs = emit.add("Cast", [x], to=_FLOAT)
    if _flag(node, "has_smooth"):
        xs = emit.add("Mul", [xs, emit.add("Cast", [smooth], to=_FLOAT)])
    x_q, amax32 = builder.unique(f"{emit.prefix}/x_q"), builder.unique(f"{emit.prefix}/amax")
    emit.nodes.extend(
        portable_per_token_nodes(xs, x_q, amax32, f"{emit.prefix}/quant", builder, x_dtype=_FLOAT)
    )
    _gemm(emit, x_q, amax32, weight, scale, bias if _flag(node, "has_bias") else None, node.output[0], x)
    return emit.nodes


EXPANSIONS: dict[str, Callable[[Any, GraphBuilder], list[Any]]] = {
    plugin_spec.RMSNORM_PER_TOKEN_QUANT: rmsnorm_quant_nodes,
    plugin_spec.LAYERNORM_PER_TOKEN_QUANT: layernorm_quant_nodes,
    plugin_spec.W8A8_GEMM: w8a8_gemm_nodes,
    plugin_spec.QUANT_W8A8_GEMM: quant_w8a8_gemm_nodes,
}
