"""The graph side of the INT8 rewrite, shared by every encoding.

Finding a quantized linear's pattern in the exported float graph
(:func:`match_linear`), naming and adding new nodes and initializers
(:class:`GraphBuilder`), and splicing a rewrite into the graph in topological order
(:func:`splice_nodes`). :mod:`sq_trt.export.qdq` (Q/DQ, per-token plugin and
portable encodings) and :mod:`sq_trt.export.fused` (the ``fused-gemm`` encoding)
both build on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sq_trt.errors import ExportError

if TYPE_CHECKING:
    import numpy as np
    import onnx
    import torch


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
        # Shapes of the graph's initializers, for rewrites whose nodes depend on them (the CPU
        # executor's exact GEMM chunks K by its weight's shape); empty when no one filled it.
        self.initializer_dims: dict[str, tuple[int, ...]] = {}
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


def _check_weight_shape(graph: _Graph, target: QuantTarget, match: _LinearMatch) -> None:
    dims = tuple(graph.initializers[target.initializer].dims)
    out_features, in_features = target.weight.shape
    expected = (in_features, out_features) if match.weight_is_kn else (out_features, in_features)
    if dims != expected:
        raise ExportError(
            f"{target.name}: weight initializer {target.initializer!r} has shape {dims}, expected {expected} "
            f"for a linear of {in_features} -> {out_features} features"
        )


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


def add_opset(model: onnx.ModelProto, domain: str, version: int) -> None:
    import onnx

    if not any(entry.domain == domain for entry in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(domain, version))
