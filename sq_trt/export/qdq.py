"""Rewrite a floating-point ONNX graph into W8A8 INT8 with explicit Q/DQ.

For each quantized linear ``y = x W^T (+ b)`` the exporter's pattern
(``W -> Transpose -> MatMul``, ``MatMul(x, W)`` for GPT-2's ``[in, out]``
Conv1D, or ``Gemm``) becomes:

* weight: an int8 initializer in the MatMul's ``[K, N]`` layout and a
  ``DequantizeLinear`` with per-output-channel scales (``axis=1``, the N axis);
* activation, ``per_tensor``: ``QuantizeLinear -> DequantizeLinear`` with the
  calibrated constant scale ``amax / 127`` (QuantizeLinear saturates to ``[-128, 127]``,
  which :func:`sq_trt.quant.reference.quantize_per_tensor` models);
* activation, ``per_token``: ``x -> (x_q int8, amax)`` (the ``sq_trt``
  plugin node, or the same semantics in standard ops), ``DequantizeLinear(x_q,
  1/127)``, the MatMul, then ``Mul(amax)`` before any bias.

One activation quantizer is shared by the linears that read the same tensor
(q/k/v), so the plugin runs once per input. Weights are quantized by
:mod:`sq_trt.quant.reference` from the float32 PyTorch weights, never from the
(possibly float16) graph.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from sq_trt import plugin_spec
from sq_trt.errors import ExportError
from sq_trt.export.graph import (
    GraphBuilder,
    QuantizeReport,
    QuantTarget,
    _check_weight_shape,
    _Graph,
    _LinearMatch,
    add_opset,
    match_linear,
    splice_nodes,
)
from sq_trt.quant.reference import AMAX_EPS, QMAX

if TYPE_CHECKING:
    import onnx

    from sq_trt.export.fused import NormGroup

ActMode = Literal["per_tensor", "per_token"]
Encoding = Literal["plugin", "portable", "fused-gemm"]
ACT_MODES: tuple[str, ...] = ("per_tensor", "per_token")
ENCODINGS: tuple[str, ...] = ("fused-gemm", "plugin", "portable")
# Encodings whose per-token graph holds ``sq_trt`` nodes, which only TensorRT proper can host.
PLUGIN_ENCODINGS: tuple[str, ...] = ("fused-gemm", "plugin")
DEFAULT_ENCODING: Encoding = "fused-gemm"


def portable_per_token_nodes(
    x: str, x_q: str, amax: str, prefix: str, builder: GraphBuilder, *, x_dtype: int | None
) -> list[Any]:
    """Standard-op nodes computing ``(x_q, amax) = PerTokenQuant(x)`` (the reference semantics).

    ``x * (127 / max(amax, 1e-30))`` in float32, Round (half to even), Clip to
    ``[-127, 127]``, Cast to int8; ``amax`` is returned in ``x``'s dtype (exact:
    the max of values of that dtype is one of them).

    Args:
        x: Input tensor name.
        x_q: Name to give the int8 output.
        amax: Name to give the ``[..., 1]`` amax output.
        prefix: Prefix of new node and tensor names.
        builder: Where constants go.
        x_dtype: ONNX element type of ``x``; None to use ``CastLike`` (dtype unknown).
    """
    import numpy as np
    from onnx import TensorProto
    from onnx.helper import make_node

    def t(suffix: str) -> str:
        return builder.unique(f"{prefix}/{suffix}")

    axes = builder.const(f"{prefix}/axes", np.array([-1], dtype=np.int64))
    eps = builder.const(f"{prefix}/eps", np.array(AMAX_EPS, dtype=np.float32))
    qmax = builder.const(f"{prefix}/qmax", np.array(float(QMAX), dtype=np.float32))
    qmin = builder.const(f"{prefix}/qmin", np.array(-float(QMAX), dtype=np.float32))
    x32, absx, amax32, safe, inv, scaled, rounded, clipped = (
        t(s) for s in ("x_f32", "abs", "amax_f32", "amax_safe", "inv_scale", "scaled", "rounded", "clipped")
    )
    nodes = [
        make_node("Cast", [x], [x32], name=t("Cast"), to=TensorProto.FLOAT),
        make_node("Abs", [x32], [absx], name=t("Abs")),
        make_node("ReduceMax", [absx, axes], [amax32], name=t("ReduceMax"), keepdims=1),
        make_node("Max", [amax32, eps], [safe], name=t("Max")),
        make_node("Div", [qmax, safe], [inv], name=t("Div")),
        make_node("Mul", [x32, inv], [scaled], name=t("Mul")),
        make_node("Round", [scaled], [rounded], name=t("Round")),
        make_node("Clip", [rounded, qmin, qmax], [clipped], name=t("Clip")),
        make_node("Cast", [clipped], [x_q], name=t("CastInt8"), to=TensorProto.INT8),
    ]
    if x_dtype is None:
        nodes.append(make_node("CastLike", [amax32, x], [amax], name=t("CastLikeAmax")))
    else:
        nodes.append(make_node("Cast", [amax32], [amax], name=t("CastAmax"), to=x_dtype))
    return nodes


def plugin_per_token_node(x: str, x_q: str, amax: str, name: str) -> Any:
    """The ``sq_trt::PerTokenQuant`` node TensorRT maps to the plugin (see :mod:`sq_trt.plugin_spec`)."""
    from onnx.helper import make_node

    from sq_trt.plugins import onnx_node_attributes

    # One source for the parser-facing attributes (namespace, version, aot=1 for the AOT kernel).
    attributes = onnx_node_attributes(plugin_spec.PER_TOKEN_QUANT)
    return make_node(
        plugin_spec.PER_TOKEN_QUANT, [x], [x_q, amax], name=name, domain=plugin_spec.ONNX_DOMAIN, **attributes
    )


def _weight_nodes(target: QuantTarget, match: _LinearMatch, builder: GraphBuilder) -> tuple[list[Any], str]:
    import numpy as np
    from onnx.helper import make_node

    from sq_trt.quant.reference import quantize_weight_per_channel

    w_q, scale = quantize_weight_per_channel(target.weight.detach().float().cpu())
    # The MatMul computes x @ B with B = [K, N]; the reference quantizes rows of W[N, K].
    w_kn = np.ascontiguousarray(w_q.numpy().T)
    q_name = builder.const(f"{target.name}.weight_int8", w_kn)
    s_name = builder.act_const(f"{target.name}.weight_scale", scale.numpy())
    out = builder.unique(f"{target.name}.weight_dq")
    return [
        make_node(
            "DequantizeLinear",
            [q_name, s_name],
            [out],
            name=builder.unique(f"{target.name}/weight_dq"),
            axis=1,
        )
    ], out


def quantize_graph(
    model: onnx.ModelProto,
    targets: Iterable[QuantTarget],
    *,
    act_mode: ActMode,
    encoding: Encoding = "plugin",
    act_dtype: str = "float16",
    norm_groups: Sequence[NormGroup] = (),
) -> QuantizeReport:
    """Rewrite ``model`` in place into W8A8 INT8 with explicit Q/DQ.

    Args:
        model: The float graph from :func:`sq_trt.export.onnx_export.export_float_onnx`.
        targets: The linears to quantize (weights float32 ``[out, in]``).
        act_mode: ``"per_tensor"`` (static, needs ``input_amax``) or ``"per_token"``.
        encoding: Per-token encoding: ``"plugin"`` (``sq_trt::PerTokenQuant``), ``"portable"``
            (standard ops) or ``"fused-gemm"`` (one ``sq_trt`` GEMM node per linear, see
            :mod:`sq_trt.export.fused`).
        act_dtype: The graph's activation dtype (``"float16"``/``"float32"``); scales use it.
        norm_groups: ``fused-gemm`` only: the norms that feed only quantized linears (from the
            architecture registry); each becomes one fused norm + quantization node.

    Returns:
        What was quantized.

    Raises:
        ExportError: A linear's pattern is not found, or a per-tensor scale is missing.
    """
    dtype = _graph_dtype(act_mode, encoding, act_dtype)
    graph = _Graph(model.graph)
    builder = GraphBuilder(dtype)
    builder.reserve(graph.initializers)
    builder.reserve(name for node in model.graph.node for name in (*node.input, *node.output, node.name))
    if act_mode == "per_token" and encoding == "fused-gemm":
        from sq_trt.export.fused import quantize_graph_fused

        return quantize_graph_fused(model, graph, builder, targets, norm_groups)
    before: dict[int, list[Any]] = {}  # id(node) -> nodes to insert before it
    replace: dict[int, list[Any]] = {}
    drop: set[int] = set()
    shared: dict[tuple[str, float | None], tuple[str, str | None]] = {}
    report = QuantizeReport()

    for target in targets:
        match = match_linear(graph, target)
        _check_weight_shape(graph, target, match)
        node = match.matmul
        x = node.input[0]
        _check_has_amax(target, act_mode)
        key = (x, target.input_amax if act_mode == "per_tensor" else None)
        if key not in shared:
            act_nodes, x_dq, amax = _activation_nodes(x, target, act_mode, encoding, builder)
            before.setdefault(id(node), []).extend(act_nodes)
            shared[key] = (x_dq, amax)
            report.activation_quantizers += 1
        x_dq, amax = shared[key]
        weight_nodes, w_dq = _weight_nodes(target, match, builder)
        before.setdefault(id(node), []).extend(weight_nodes)
        drop.update(id(n) for n in match.removed)
        replace[id(node)] = _int8_matmul_nodes(target, node, x_dq, w_dq, amax, builder)
        report.quantized.append(target.name)

    splice_nodes(model, builder, before=before, replace=replace, drop=drop)
    if act_mode == "per_token" and encoding == "plugin":
        add_opset(model, plugin_spec.ONNX_DOMAIN, 1)
    return report


def _graph_dtype(act_mode: str, encoding: str, act_dtype: str) -> int:
    """The ONNX element type of the graph's activations, after checking the modes (ExportError)."""
    import onnx

    if act_mode not in ACT_MODES:
        raise ExportError(f"act_mode must be one of {ACT_MODES}, got {act_mode!r}")
    if encoding not in ENCODINGS:
        raise ExportError(f"per-token encoding must be one of {ENCODINGS}, got {encoding!r}")
    dtype = {"float16": onnx.TensorProto.FLOAT16, "float32": onnx.TensorProto.FLOAT}.get(act_dtype)
    if dtype is None:
        raise ExportError(f"act_dtype must be float16 or float32, got {act_dtype!r}")
    return dtype


def _check_has_amax(target: QuantTarget, act_mode: str) -> None:
    if act_mode == "per_tensor" and target.input_amax is None:
        raise ExportError(
            f"{target.name}: per-tensor activation quantization needs its calibrated input_amax, "
            "which the act_scales do not have; calibrate this model again or use --act-mode per-token"
        )


def _int8_matmul_nodes(
    target: QuantTarget, node: Any, x_dq: str, w_dq: str, amax: str | None, builder: GraphBuilder
) -> list[Any]:
    """What replaces the float MatMul/Gemm: MatMul of the dequantized inputs, ``* amax``, ``+ bias``."""
    from onnx.helper import make_node

    y = node.output[0]
    bias = node.input[2] if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2] else None
    matmul_out = builder.unique(f"{target.name}/matmul") if (amax or bias) else y
    new_nodes = [make_node("MatMul", [x_dq, w_dq], [matmul_out], name=builder.unique(f"{target.name}/MatMul"))]
    scaled = matmul_out
    if amax:
        scaled = y if not bias else builder.unique(f"{target.name}/scaled")
        new_nodes.append(
            make_node("Mul", [matmul_out, amax], [scaled], name=builder.unique(f"{target.name}/MulAmax"))
        )
    if bias:
        new_nodes.append(make_node("Add", [scaled, bias], [y], name=builder.unique(f"{target.name}/AddBias")))
    return new_nodes


def per_tensor_qdq_nodes(x: str, amax: float, prefix: str, builder: GraphBuilder) -> tuple[list[Any], str]:
    """``QuantizeLinear -> DequantizeLinear`` of ``x`` with the static range ``amax``.

    The scale is the reference's float32 ``amax / 127`` (rounded to the graph dtype by
    ``act_const``), so the graph and :func:`sq_trt.quant.reference.fake_quant_per_tensor`
    divide by the same value; the zero point is int8 0.

    Returns:
        The two nodes and the name of the dequantized tensor.
    """
    import numpy as np
    from onnx.helper import make_node

    from sq_trt.quant.reference import per_tensor_scale

    scale = builder.act_const(f"{prefix}_scale", per_tensor_scale(amax).numpy())
    zero = builder.const(f"{prefix}_zero_point", np.array(0, dtype=np.int8))
    x_q, x_dq = builder.unique(f"{prefix}_q"), builder.unique(f"{prefix}_dq")
    return [
        make_node("QuantizeLinear", [x, scale, zero], [x_q], name=builder.unique(f"{prefix}/QuantizeLinear")),
        make_node(
            "DequantizeLinear", [x_q, scale, zero], [x_dq], name=builder.unique(f"{prefix}/DequantizeLinear")
        ),
    ], x_dq


def _activation_nodes(
    x: str, target: QuantTarget, act_mode: ActMode, encoding: Encoding, builder: GraphBuilder
) -> tuple[list[Any], str, str | None]:
    from onnx.helper import make_node

    prefix = f"{target.name}/input"
    if act_mode == "per_tensor":
        nodes, x_dq = per_tensor_qdq_nodes(x, float(target.input_amax), prefix, builder)  # type: ignore[arg-type]
        return nodes, x_dq, None
    x_dq = builder.unique(f"{prefix}_dq")
    x_q, amax_name = builder.unique(f"{prefix}_q"), builder.unique(f"{prefix}_amax")
    if encoding == "plugin":
        quant = [
            plugin_per_token_node(
                x, x_q, amax_name, builder.unique(f"{prefix}/{plugin_spec.PER_TOKEN_QUANT}")
            )
        ]
    else:
        quant = portable_per_token_nodes(
            x, x_q, amax_name, f"{prefix}/per_token", builder, x_dtype=builder.act_dtype
        )
    dq_scale = builder.act_const(f"{prefix}_dq_scale", plugin_spec.DQ_SCALE)
    dq = make_node(
        "DequantizeLinear", [x_q, dq_scale], [x_dq], name=builder.unique(f"{prefix}/DequantizeLinear")
    )
    return [*quant, dq], x_dq, amax_name


def targets_from_model(
    torch_model: Any,
    names: Sequence[str],
    *,
    weight_layout: str,
    input_amax: Mapping[str, Any] | None,
    prefix: str,
) -> list[QuantTarget]:
    """Build the :class:`QuantTarget` list from a PyTorch model's linears.

    Args:
        torch_model: The (float32) model whose weights are quantized.
        names: Full module names to quantize.
        weight_layout: ``"linear"`` ([out, in]) or ``"conv1d"`` ([in, out]).
        input_amax: Name -> calibrated ``max |x|`` (None in per-token mode).
        prefix: Prefix the exporter put before module names in initializer names.
    """
    modules = dict(torch_model.named_modules())
    targets = []
    for name in names:
        weight = modules[name].weight.detach().float()
        if weight_layout == "conv1d":
            weight = weight.t()
        amax = None
        if input_amax is not None and name in input_amax:
            amax = float(input_amax[name])
        targets.append(QuantTarget(name, f"{prefix}{name}.weight", weight, amax))
    return targets
