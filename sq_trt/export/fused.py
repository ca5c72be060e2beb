"""The ``fused-gemm`` per-token encoding: one ``sq_trt`` GEMM node per quantized linear.

The ``plugin`` and ``portable`` encodings leave the INT8 GEMM to TensorRT's fusion of
``x_q -> DequantizeLinear -> MatMul(DQ weights) -> Mul(amax)``, which nothing documents
for a plugin-made activation. This encoding states the GEMM itself (see
:mod:`sq_trt.plugin_spec`):

* a norm that feeds only quantized linears (the architecture registry's norm -> linears
  smoothing groups: Llama's ``input_layernorm -> q/k/v``, OPT and GPT-2's pre-LN norms)
  becomes one ``RMSNormPerTokenQuant`` / ``LayerNormPerTokenQuant`` node, whose
  ``(x_q, amax)`` feed one ``W8A8Gemm`` per linear: the activation is read once;
* every other quantized linear (``o_proj``, ``down_proj``, BERT's post-LN inputs, a norm
  whose float output something else also reads) becomes one ``QuantW8A8Gemm``, which
  quantizes its own input per token.

Weights are int8 ``[N, K]`` (``nn.Linear``'s layout), scales and bias float32, all
initializers. A linear's bias (``Gemm``'s C, or the ``Add`` of a 1-D constant right after
its MatMul) moves into the node, so it is added in float32 before the one rounding to the
activation dtype. A norm subgraph that does not have the expected shape is left alone and
its linears get ``QuantW8A8Gemm``: slower, never wrong.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from sq_trt import plugin_spec
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

if TYPE_CHECKING:
    import numpy as np
    import onnx

NormKind = Literal["rmsnorm", "layernorm"]
GEMM_OPS = (plugin_spec.W8A8_GEMM, plugin_spec.QUANT_W8A8_GEMM)
NORM_QUANT_OPS = {
    "rmsnorm": plugin_spec.RMSNORM_PER_TOKEN_QUANT,
    "layernorm": plugin_spec.LAYERNORM_PER_TOKEN_QUANT,
}


@dataclass(frozen=True)
class NormGroup:
    """A norm whose output is exactly the input of a set of linears.

    Attributes:
        name: Full module name of the norm (``model.layers.0.input_layernorm``).
        kind: ``"rmsnorm"`` or ``"layernorm"``.
        weight: Name of its weight initializer in the graph (the subgraph is found from it).
        linears: Full module names of the linears reading its output.
    """

    name: str
    kind: NormKind
    weight: str
    linears: tuple[str, ...]


def norm_groups_from_model(torch_model: Any, quantized: Iterable[str], *, prefix: str) -> list[NormGroup]:
    """The registry's norm -> linears groups whose linears are all quantized.

    A group with an excluded linear is left out: that linear reads the norm's float output,
    so the norm has to stay.

    Args:
        torch_model: A model of a registered family.
        quantized: Full module names of the linears being quantized.
        prefix: Prefix the exporter put before module names in initializer names.
    """
    from sq_trt.models.registry import smoothing_groups

    wanted = set(quantized)
    return [
        NormGroup(group.prev, group.prev_kind, f"{prefix}{group.prev}.weight", group.linears)  # type: ignore[arg-type]
        for group in smoothing_groups(torch_model)
        if group.prev_kind in NORM_QUANT_OPS and set(group.linears) <= wanted
    ]


def plugin_node(op_type: str, inputs: Sequence[str], outputs: Sequence[str], name: str, **fields: Any) -> Any:
    """A ``sq_trt`` node TensorRT's parser maps to the plugin ``op_type`` (AOT implementation).

    ``fields`` are the plugin's own attributes (``epsilon``, ``has_bias``, ``has_smooth``),
    checked by :func:`sq_trt.plugins.onnx_node_attributes`, the one source of them.
    """
    from onnx.helper import make_node

    from sq_trt.plugins import onnx_node_attributes

    attributes = onnx_node_attributes(op_type, **fields)
    return make_node(op_type, list(inputs), list(outputs), name=name, domain=plugin_spec.ONNX_DOMAIN, **attributes)


@dataclass
class _NormMatch:
    last: Any  # the node whose output is the norm's output
    removed: list[Any]  # the norm's other nodes
    x: str  # the norm's input
    epsilon: float
    params: list[str]  # weight (and bias) initializers, the fused node's other inputs


class _Index:
    """Producers and constants of a graph, for walking a norm subgraph backwards."""

    def __init__(self, graph: _Graph) -> None:
        self.graph = graph
        self.producers: dict[str, Any] = {out: node for node in graph.graph.node for out in node.output}
        self.outputs = {value.name for value in graph.graph.output}

    def producer(self, name: str, op_type: str) -> Any:
        node = self.producers.get(name)
        return node if node is not None and node.op_type == op_type else None

    def constant(self, name: str) -> np.ndarray | None:
        import onnx
        from onnx import numpy_helper

        if name in self.graph.initializers:
            return numpy_helper.to_array(self.graph.initializers[name])
        node = self.producers.get(name)
        if node is not None and node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    return numpy_helper.to_array(onnx.helper.get_attribute_value(attribute))
        return None

    def used_only_by(self, nodes: Sequence[Any], allowed: Sequence[Any]) -> bool:
        """Every output of ``nodes`` is read only by ``allowed`` nodes and is no graph output."""
        ids = {id(node) for node in allowed}
        for node in nodes:
            for out in node.output:
                if out in self.outputs or any(
                    id(user) not in ids for user, _ in self.graph.consumers.get(out, [])
                ):
                    return False
        return True


def _other_input(node: Any, name: str) -> str | None:
    if len(node.input) != 2 or name not in node.input:
        return None
    return node.input[1] if node.input[0] == name else node.input[0]


def _last_axis(index: _Index, node: Any) -> bool:
    from sq_trt.export.graph import _attr

    if _attr(node, "keepdims", 1) != 1:
        return False
    axes = index.constant(node.input[1]) if len(node.input) > 1 else None
    if axes is None:
        axes_attr = _attr(node, "axes", None)
        return axes_attr is not None and list(axes_attr) == [-1]
    return [int(a) for a in axes.reshape(-1)] == [-1]


def _scalar(index: _Index, name: str) -> float | None:
    value = index.constant(name)
    return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None


def match_rmsnorm(index: _Index, weight: str) -> _NormMatch | None:
    """Find ``x -> [Cast f32] -> x * 1/sqrt(mean(x^2) + eps) -> [Cast] -> * weight`` from the weight.

    Accepts the forms the dynamo exporter writes for ``LlamaRMSNorm`` and its copies:
    ``Pow(x, 2)`` or ``Mul(x, x)``; ``Mul(x, Reciprocal(Sqrt(.)))``, ``Mul(x, Div(1, Sqrt(.)))``
    or ``Div(x, Sqrt(.))``. Returns None for anything else.
    """
    users = index.graph.consumers.get(weight, [])
    if len(users) != 1 or users[0][0].op_type != "Mul":
        return None
    last = users[0][0]
    normed = _other_input(last, weight)
    chain: list[Any] = []
    node = index.producers.get(normed) if normed else None
    if node is not None and node.op_type == "Cast":  # back to the activation dtype before the weight
        chain.append(node)
        node = index.producers.get(node.input[0])
    if node is None or node.op_type not in ("Mul", "Div") or len(node.input) != 2:
        return None
    chain.append(node)
    found = _rms_denominator(index, node, chain)
    if found is None:
        return None
    x32, epsilon = found
    x = x32
    cast = index.producer(x32, "Cast")
    if cast is not None and _cast_to(cast) == 1:  # TensorProto.FLOAT: the norm computes in float32
        chain.append(cast)
        x = cast.input[0]
    if not index.used_only_by(chain, [*chain, last]):
        return None
    return _NormMatch(last, chain, x, epsilon, [weight])


def _cast_to(node: Any) -> int | None:
    from sq_trt.export.graph import _attr

    return _attr(node, "to", None)


def _rms_denominator(index: _Index, scale: Any, chain: list[Any]) -> tuple[str, float] | None:
    """For ``scale`` = ``x * rstd`` or ``x / rms``: the tensor ``x`` and ``eps``, extending ``chain``."""
    for position in (0, 1):
        x32, other = scale.input[position], scale.input[1 - position]
        if scale.op_type == "Div" and position == 1:
            break
        sqrt = index.producer(other, "Sqrt")
        inner: list[Any] = []
        if scale.op_type == "Mul":
            reciprocal = index.producer(other, "Reciprocal")
            divide = index.producer(other, "Div")
            if reciprocal is not None:
                sqrt, inner = index.producer(reciprocal.input[0], "Sqrt"), [reciprocal]
            elif divide is not None and _scalar(index, divide.input[0]) == 1.0:
                sqrt, inner = index.producer(divide.input[1], "Sqrt"), [divide]
            else:
                sqrt = None
        if sqrt is None:
            continue
        add = index.producer(sqrt.input[0], "Add")
        if add is None:
            continue
        for mean_pos in (0, 1):
            mean = index.producer(add.input[mean_pos], "ReduceMean")
            epsilon = _scalar(index, add.input[1 - mean_pos])
            if mean is None or epsilon is None or not epsilon > 0 or not _last_axis(index, mean):
                continue
            square = index.producers.get(mean.input[0])
            if square is None:
                continue
            is_pow = (
                square.op_type == "Pow" and square.input[0] == x32 and _scalar(index, square.input[1]) == 2.0
            )
            is_mul = square.op_type == "Mul" and list(square.input) == [x32, x32]
            if is_pow or is_mul:
                chain.extend([*inner, sqrt, add, mean, square])
                return x32, epsilon
    return None


def match_layernorm(index: _Index, weight: str) -> _NormMatch | None:
    """Find the ``LayerNormalization`` node over the last axis that reads ``weight``, with a constant bias.

    The bias is taken from the node, not by name: the exporter's optimizer merges equal
    constants (a freshly initialised model's zero biases become one initializer).
    """
    from sq_trt.export.graph import _attr

    users = index.graph.consumers.get(weight, [])
    if len(users) != 1:
        return None
    node, position = users[0]
    if node.op_type != "LayerNormalization" or position != 1 or _attr(node, "axis", -1) != -1:
        return None
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if bias is None or index.constant(bias) is None or _attr(node, "stash_type", 1) != 1:
        return None  # the plugin takes a constant bias
    if any(out and (out in index.outputs or index.graph.consumers.get(out)) for out in node.output[1:]):
        return None  # its mean / inverse std are read elsewhere
    return _NormMatch(node, [], node.input[0], float(_attr(node, "epsilon", 1e-5)), [weight, bias])


class _Initializers:
    """The fused nodes' float32 initializers, shared where equal (the ones / zeros vectors)."""

    def __init__(self, builder: GraphBuilder) -> None:
        self.builder = builder
        self._filled: dict[tuple[str, int], str] = {}

    def filled(self, what: str, size: int) -> str:
        import numpy as np

        key = (what, size)
        if key not in self._filled:
            value = 1.0 if what == "ones" else 0.0
            self._filled[key] = self.builder.const(f"sq_trt_{what}_{size}", np.full(size, value, np.float32))
        return self._filled[key]

    def float32(self, name: str, array: np.ndarray) -> str:
        import numpy as np

        return self.builder.const(name, np.ascontiguousarray(array, dtype=np.float32))


def _bias_of(graph: _Graph, match: _LinearMatch, out_features: int) -> tuple[np.ndarray | None, str, Any]:
    """The linear's bias to fold: (float32 values or None, the tensor the node writes, an Add to drop)."""
    import numpy as np
    from onnx import numpy_helper

    node = match.matmul
    if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]:
        init = graph.initializers.get(node.input[2])
        values = numpy_helper.to_array(init) if init is not None else None
        if values is None or values.shape not in ((out_features,), (1, out_features)):
            return None, node.output[0], None  # kept by the caller as an Add after the node
        return values.reshape(-1).astype(np.float32), node.output[0], None
    users = graph.consumers.get(node.output[0], [])
    if len(users) == 1 and users[0][0].op_type == "Add":
        add = users[0][0]
        other = _other_input(add, node.output[0])
        init = graph.initializers.get(other) if other else None
        if init is not None and tuple(init.dims) == (out_features,):
            return numpy_helper.to_array(init).astype(np.float32), add.output[0], add
    return None, node.output[0], None


def quantize_graph_fused(
    model: onnx.ModelProto,
    graph: _Graph,
    builder: GraphBuilder,
    targets: Iterable[QuantTarget],
    norm_groups: Sequence[NormGroup],
) -> QuantizeReport:
    """The ``fused-gemm`` rewrite of :func:`sq_trt.export.qdq.quantize_graph` (same arguments, in place).

    Raises:
        ExportError: A linear's pattern is not found (see :func:`sq_trt.export.qdq.match_linear`).
    """
    targets = list(targets)
    matches: dict[str, _LinearMatch] = {}
    for target in targets:
        matches[target.name] = match_linear(graph, target)
        _check_weight_shape(graph, target, matches[target.name])
    report = QuantizeReport()
    replace: dict[int, list[Any]] = {}
    drop: set[int] = set()
    index = _Index(graph)
    stale: set[str] = set()
    fed = _fuse_norms(index, builder, norm_groups, matches, replace, drop, report, stale)
    consts = _Initializers(builder)
    for target in targets:
        match = matches[target.name]
        nodes = _gemm_nodes(graph, builder, consts, target, match, fed.get(target.name), drop)
        replace[id(match.matmul)] = nodes
        drop.update(id(n) for n in match.removed)
        if target.name not in fed:
            report.activation_quantizers += 1
        report.quantized.append(target.name)
    splice_nodes(model, builder, before={}, replace=replace, drop=drop)
    kept = [value for value in model.graph.value_info if value.name not in stale]
    if len(kept) != len(model.graph.value_info):
        del model.graph.value_info[:]
        model.graph.value_info.extend(kept)
    add_opset(model, plugin_spec.ONNX_DOMAIN, 1)
    return report


def _entries(index: _Index, out: str, matmuls: Sequence[Any]) -> list[Any] | None:
    """Check that the norm's output ``out`` reaches exactly ``matmuls`` (input 0), nowhere else.

    A linear may read it through a ``Reshape`` to 2-D that only it reads, when its own output
    is reshaped back (GPT-2's Conv1D: ``addmm(b, x.view(-1, K), W).view(...)``); the GEMM node
    then reads the unflattened ``x_q`` and writes ``[..., N]``, which that last Reshape takes
    as it took ``[M, N]``. Returns those input Reshapes (to drop), or None when the output
    goes anywhere else.
    """
    if out in index.outputs:
        return None
    reshapes: list[Any] = []
    reached: list[Any] = []
    for user, position in index.graph.consumers.get(out, []):
        if user.op_type == "Reshape" and position == 0 and user.output[0] not in index.outputs:
            after = index.graph.consumers.get(user.output[0], [])
            if len(after) != 1 or after[0][1] != 0:
                return None
            matmul = after[0][0]
            ends = index.graph.consumers.get(matmul.output[0], [])
            if not ends or any(end.op_type != "Reshape" or pos != 0 for end, pos in ends):
                return None
            reshapes.append(user)
            reached.append(matmul)
        elif position == 0:
            reached.append(user)
        else:
            return None
    if sorted(id(n) for n in reached) != sorted(id(n) for n in matmuls):
        return None
    return reshapes


def _fuse_norms(
    index: _Index,
    builder: GraphBuilder,
    norm_groups: Sequence[NormGroup],
    matches: dict[str, _LinearMatch],
    replace: dict[int, list[Any]],
    drop: set[int],
    report: QuantizeReport,
    stale: set[str],
) -> dict[str, tuple[str, str]]:
    """Replace each matched norm with its fused norm + quantization node; linear -> (x_q, amax)."""
    fed: dict[str, tuple[str, str]] = {}
    for group in norm_groups:
        if not all(name in matches for name in group.linears):
            continue
        if group.kind == "rmsnorm":
            found = match_rmsnorm(index, group.weight)
        else:
            found = match_layernorm(index, group.weight)
        if found is None:
            continue
        entries = _entries(index, found.last.output[0], [matches[name].matmul for name in group.linears])
        if entries is None:
            continue
        op_type = NORM_QUANT_OPS[group.kind]
        x_q, amax = builder.unique(f"{group.name}/x_q"), builder.unique(f"{group.name}/amax")
        inputs = [found.x, *found.params]
        replace[id(found.last)] = [
            plugin_node(
                op_type, inputs, [x_q, amax], builder.unique(f"{group.name}/{op_type}"), epsilon=found.epsilon
            )
        ]
        drop.update(id(node) for node in [*found.removed, *entries])
        # The linears behind a dropped Reshape now write [..., N]: their recorded shapes are stale.
        stale.update(after.output[0] for r in entries for after, _ in index.graph.consumers[r.output[0]])
        for name in group.linears:
            fed[name] = (x_q, amax)
        report.fused_norms.append(group.name)
        report.activation_quantizers += 1
    return fed


def _gemm_nodes(
    graph: _Graph,
    builder: GraphBuilder,
    consts: _Initializers,
    target: QuantTarget,
    match: _LinearMatch,
    fed: tuple[str, str] | None,
    drop: set[int],
) -> list[Any]:
    """The ``W8A8Gemm`` (fed by a fused norm) or ``QuantW8A8Gemm`` node of one linear (+ an unfoldable bias)."""
    from onnx.helper import make_node

    from sq_trt.quant.reference import quantize_weight_per_channel

    out_features, in_features = target.weight.shape
    w_q, w_scale = quantize_weight_per_channel(target.weight.detach().float().cpu())
    weight = builder.const(f"{target.name}.weight_int8", w_q.numpy())  # [N, K], nn.Linear's layout
    scale = consts.float32(f"{target.name}.weight_scale", w_scale.numpy())
    bias_values, y, folded_add = _bias_of(graph, match, out_features)
    if folded_add is not None:
        drop.add(id(folded_add))
    if bias_values is not None:
        bias = consts.float32(f"{target.name}.bias_f32", bias_values)
    else:
        bias = consts.filled("zeros", out_features)
    leftover_bias = None
    node = match.matmul
    if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2] and bias_values is None:
        leftover_bias, y = node.input[2], builder.unique(f"{target.name}/gemm")
    has_bias = int(bias_values is not None)
    name = builder.unique(f"{target.name}/{plugin_spec.W8A8_GEMM if fed else plugin_spec.QUANT_W8A8_GEMM}")
    if fed is not None:
        nodes = [
            plugin_node(plugin_spec.W8A8_GEMM, [*fed, weight, scale, bias], [y], name, has_bias=has_bias)
        ]
    else:
        smooth = consts.filled("ones", in_features)
        nodes = [
            plugin_node(
                plugin_spec.QUANT_W8A8_GEMM,
                [node.input[0], smooth, weight, scale, bias],
                [y],
                name,
                has_smooth=0,
                has_bias=has_bias,
            )
        ]
    if leftover_bias is not None:
        nodes.append(
            make_node(
                "Add", [y, leftover_bias], [node.output[0]], name=builder.unique(f"{target.name}/AddBias")
            )
        )
    return nodes
