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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from sq_trt import plugin_spec
from sq_trt.errors import ExportError
from sq_trt.quant.reference import AMAX_EPS, QMAX

if TYPE_CHECKING:
    import numpy as np
    import onnx
    import torch

    from sq_trt.export.fused import NormGroup

ActMode = Literal["per_tensor", "per_token"]
Encoding = Literal["plugin", "portable", "fused-gemm"]
ACT_MODES: tuple[str, ...] = ("per_tensor", "per_token")
ENCODINGS: tuple[str, ...] = ("fused-gemm", "plugin", "portable")
# Encodings whose per-token graph holds ``sq_trt`` nodes, which only TensorRT proper can host.
PLUGIN_ENCODINGS: tuple[str, ...] = ("fused-gemm", "plugin")
DEFAULT_ENCODING: Encoding = "fused-gemm"


@dataclass(frozen=True)
class QuantTarget:
    """One linear to quantize.

    Attributes:
        name: Full module name (``model.layers.0.self_attn.q_proj``).
        initializer: Name of its weight initializer in the graph.
        weight: Float weight ``[out, in]`` (nn.Linear layout), float32.
        input_amax: Calibrated ``max |x|`` (required for ``per_tensor``).
    """

    name: str
    initializer: str
    weight: torch.Tensor
    input_amax: float | None = None


@dataclass
class QuantizeReport:
    """What the rewrite did (recorded in the export manifest)."""

    quantized: list[str] = field(default_factory=list)
    activation_quantizers: int = 0
    fused_norms: list[str] = field(default_factory=list)


@dataclass
class _LinearMatch:
    matmul: Any  # the MatMul or Gemm NodeProto
    weight_is_kn: bool  # the initializer is stored [K, N] (Conv1D / Gemm transB=0), else [N, K]
    removed: list[Any]  # nodes made dead by the rewrite (the weight's Transpose)


def _attr(node: Any, name: str, default: Any) -> Any:
    import onnx

    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


class _Graph:
    """Index of producers and consumers over a GraphProto's node list."""

    def __init__(self, graph: Any) -> None:
        self.graph = graph
        self.consumers: dict[str, list[tuple[Any, int]]] = {}
        for node in graph.node:
            for index, name in enumerate(node.input):
                self.consumers.setdefault(name, []).append((node, index))
        self.initializers = {init.name: init for init in graph.initializer}

    def sole_consumer(self, tensor: str, owner: str) -> tuple[Any, int]:
        users = self.consumers.get(tensor, [])
        if len(users) != 1:
            kinds = [f"{n.op_type}({n.name})" for n, _ in users] or ["nothing"]
            raise ExportError(
                f"{owner}: expected its weight tensor {tensor!r} to feed exactly one node, found {kinds}; "
                "shared or tied weights of a quantized linear are not supported: --exclude this linear"
            )
        return users[0]


def match_linear(graph: _Graph, target: QuantTarget) -> _LinearMatch:
    """Find the MatMul/Gemm computing ``target`` from its weight initializer.

    Raises:
        ExportError: Naming the linear and the node found, when the pattern is not one we rewrite.
    """
    if target.initializer not in graph.initializers:
        raise ExportError(
            f"{target.name}: weight initializer {target.initializer!r} is not in the exported graph; "
            "the exporter renamed or folded it (see sq_trt.export.onnx_export), or the module is not a linear"
        )
    node, index = graph.sole_consumer(target.initializer, target.name)
    removed: list[Any] = []
    weight_is_kn = True
    if node.op_type == "Transpose":
        if list(_attr(node, "perm", [1, 0])) != [1, 0]:
            raise ExportError(
                f"{target.name}: Transpose {node.name!r} of its weight has perm {_attr(node, 'perm', None)}"
            )
        removed.append(node)
        weight_is_kn = False
        node, index = graph.sole_consumer(node.output[0], target.name)
    if node.op_type == "Gemm":
        if _attr(node, "transA", 0) or _attr(node, "alpha", 1.0) != 1.0 or _attr(node, "beta", 1.0) != 1.0:
            raise ExportError(
                f"{target.name}: Gemm {node.name!r} has transA/alpha/beta other than 0/1/1; not a plain linear"
            )
        if _attr(node, "transB", 0):
            weight_is_kn = not weight_is_kn
    elif node.op_type != "MatMul":
        raise ExportError(
            f"{target.name}: its weight feeds {node.op_type} node {node.name!r}, expected MatMul or Gemm; "
            "this op around a quantized linear is not supported: --exclude this linear"
        )
    if index != 1:
        raise ExportError(
            f"{target.name}: its weight is input {index} of {node.op_type} {node.name!r}, expected input 1"
        )
    return _LinearMatch(node, weight_is_kn, removed)


class GraphBuilder:
    """Collects new nodes and initializers with unique names."""

    def __init__(self, act_dtype: int) -> None:
        self.act_dtype = act_dtype
        self.initializers: list[Any] = []
        self._names: set[str] = set()

    def reserve(self, names: Iterable[str]) -> None:
        """Mark names already used by the graph."""
        self._names.update(names)

    def unique(self, name: str) -> str:
        candidate, suffix = name, 1
        while candidate in self._names:
            candidate, suffix = f"{name}_{suffix}", suffix + 1
        self._names.add(candidate)
        return candidate

    def const(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        unique = self.unique(name)
        self.initializers.append(numpy_helper.from_array(array, unique))
        return unique

    def act_const(self, name: str, value: float | Sequence[float] | np.ndarray) -> str:
        import numpy as np
        import onnx

        np_dtype = onnx.helper.tensor_dtype_to_np_dtype(self.act_dtype)
        return self.const(name, np.asarray(value, dtype=np.float32).astype(np_dtype))


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


def _check_weight_shape(graph: _Graph, target: QuantTarget, match: _LinearMatch) -> None:
    dims = tuple(graph.initializers[target.initializer].dims)
    out_features, in_features = target.weight.shape
    expected = (in_features, out_features) if match.weight_is_kn else (out_features, in_features)
    if dims != expected:
        raise ExportError(
            f"{target.name}: weight initializer {target.initializer!r} has shape {dims}, expected {expected} "
            f"for a linear of {in_features} -> {out_features} features"
        )


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
    import onnx
    from onnx.helper import make_node

    if act_mode not in ACT_MODES:
        raise ExportError(f"act_mode must be one of {ACT_MODES}, got {act_mode!r}")
    if encoding not in ENCODINGS:
        raise ExportError(f"per-token encoding must be one of {ENCODINGS}, got {encoding!r}")
    dtype = {"float16": onnx.TensorProto.FLOAT16, "float32": onnx.TensorProto.FLOAT}.get(act_dtype)
    if dtype is None:
        raise ExportError(f"act_dtype must be float16 or float32, got {act_dtype!r}")
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
        if act_mode == "per_tensor" and target.input_amax is None:
            raise ExportError(
                f"{target.name}: per-tensor activation quantization needs its calibrated input_amax, "
                "which the act_scales do not have; calibrate this model again or use --act-mode per-token"
            )
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

        y = node.output[0]
        bias = node.input[2] if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2] else None
        matmul_out = builder.unique(f"{target.name}/matmul") if (amax or bias) else y
        new_nodes = [
            make_node("MatMul", [x_dq, w_dq], [matmul_out], name=builder.unique(f"{target.name}/MatMul"))
        ]
        scaled = matmul_out
        if amax:
            scaled = y if not bias else builder.unique(f"{target.name}/scaled")
            new_nodes.append(
                make_node("Mul", [matmul_out, amax], [scaled], name=builder.unique(f"{target.name}/MulAmax"))
            )
        if bias:
            new_nodes.append(
                make_node("Add", [scaled, bias], [y], name=builder.unique(f"{target.name}/AddBias"))
            )
        replace[id(node)] = new_nodes
        report.quantized.append(target.name)

    splice_nodes(model, builder, before=before, replace=replace, drop=drop)
    if act_mode == "per_token" and encoding == "plugin":
        add_opset(model, plugin_spec.ONNX_DOMAIN, 1)
    return report


def splice_nodes(
    model: onnx.ModelProto,
    builder: GraphBuilder,
    *,
    before: Mapping[int, list[Any]],
    replace: Mapping[int, list[Any]],
    drop: set[int],
) -> None:
    """Apply a rewrite to ``model`` in place, keeping the node order topological.

    Args:
        model: The graph rewritten.
        builder: Its new initializers are added (and cleared from it).
        before: ``id(node)`` -> new nodes inserted just before that node.
        replace: ``id(node)`` -> the nodes that take its place.
        drop: ``id(node)`` of nodes removed.

    Initializers no node reads any more (the replaced float weights) are removed.
    """
    nodes: list[Any] = []
    for node in model.graph.node:
        if id(node) in drop:
            continue
        nodes.extend(before.get(id(node), []))
        nodes.extend(replace.get(id(node), [node]))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {name for node in nodes for name in node.input}
    # Drop the replaced float weights in place: re-adding the kept initializers to a cleared
    # list would copy every one of them (protobuf copies on insert), gigabytes at 1B parameters.
    initializers = model.graph.initializer
    for index in reversed(range(len(initializers))):
        if initializers[index].name not in used:
            del initializers[index]
    initializers.extend(builder.initializers)
    builder.initializers.clear()


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


def add_opset(model: onnx.ModelProto, domain: str, version: int) -> None:
    import onnx

    if not any(entry.domain == domain for entry in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(domain, version))


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
