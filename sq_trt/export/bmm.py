"""Q/DQ on the inputs of the attention batched matmuls (``Q K^T`` and ``P V``), the O3 option.

Works on the float graph exported with HF's *eager* attention
(:func:`sq_trt.quant.attention.eager_attention`), where the two MatMuls of a layer
read exactly q, k^T (after RoPE and the GQA repeat), the softmax output and v.
(SDPA's exported decomposition scales q and k by sqrt(scale) before its MatMul, so
its inputs are not the calibrated tensors.) Each layer is anchored on its Softmax:
the MatMul fed by it (through Casts) is ``P V``; the MatMul that feeds it through
the scale, mask and casts is ``Q K^T``. Softmax order in the graph is layer order.

Every input gets the per-tensor ``QuantizeLinear -> DequantizeLinear`` pair of the
linears (:func:`sq_trt.export.qdq.per_tensor_qdq_nodes`), so ONNX Runtime computes exactly the
reference's :func:`sq_trt.quant.attention.bmm_fake_quant`, and TensorRT sees the Q/DQ
pattern it fuses into an INT8 BMM.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sq_trt.errors import ExportError
from sq_trt.export.qdq import GraphBuilder, per_tensor_qdq_nodes

if TYPE_CHECKING:
    import onnx

# Ops between the QK^T MatMul and the Softmax (scale, mask, casts, mask slicing).
_SCORE_OPS = {"Add", "Mul", "Div", "Where", "Cast", "Slice", "Sub"}


def _qk_matmul(softmax: Any, producers: dict[str, Any], initializers: set[str]) -> Any:
    frontier = [softmax.input[0]]
    for _ in range(8):
        following: list[str] = []
        for tensor in frontier:
            node = producers.get(tensor)
            if node is None:
                continue
            if node.op_type == "MatMul" and not any(name in initializers for name in node.input):
                return node
            if node.op_type in _SCORE_OPS:
                following.extend(name for name in node.input if name and name not in initializers)
        frontier = following
    raise ExportError(
        f"no Q K^T MatMul found before Softmax {softmax.name!r}; the attention was not exported from eager "
        "attention (sq_trt.quant.attention.eager_attention), so the O3 rewrite cannot place its Q/DQ"
    )


def _pv_matmul(softmax: Any, consumers: dict[str, list[Any]]) -> Any:
    tensor = softmax.output[0]
    for _ in range(4):
        users = consumers.get(tensor, [])
        if len(users) == 1 and users[0].op_type == "MatMul" and users[0].input[0] == tensor:
            return users[0]
        if len(users) == 1 and users[0].op_type in ("Cast", "Dropout", "Identity"):
            tensor = users[0].output[0]
            continue
        break
    raise ExportError(
        f"no P V MatMul found after Softmax {softmax.name!r}; the O3 rewrite needs eager attention"
    )


def quantize_bmm_inputs(
    model: onnx.ModelProto, layers: Sequence[str], ranges: Mapping[str, float], *, act_dtype: str
) -> list[str]:
    """Insert Q/DQ on both inputs of each layer's two attention MatMuls, in place.

    Args:
        model: The (already linear-quantized) eager-attention graph.
        layers: Attention module names in layer order (``model.layers.0.self_attn``...).
        ranges: ``"<attn>.<q|k|v|p>" -> amax`` (:func:`sq_trt.quant.attention.bmm_ranges`).
        act_dtype: ``"float16"`` or ``"float32"``: the dtype of the scale constants.

    Returns:
        The quantized BMM inputs, ``"<attn>.<q|k|v|p>"``.

    Raises:
        ExportError: The number of Softmax nodes is not the number of layers, or a
            layer's pattern is not found (naming the node).
    """
    import onnx as onnx_lib

    dtype = {"float16": onnx_lib.TensorProto.FLOAT16, "float32": onnx_lib.TensorProto.FLOAT}[act_dtype]
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    softmaxes = [node for node in graph.node if node.op_type == "Softmax"]
    if len(softmaxes) != len(layers):
        raise ExportError(
            f"the graph has {len(softmaxes)} Softmax nodes for {len(layers)} attention layers; "
            "the O3 rewrite maps one Softmax to each layer and cannot place its Q/DQ here"
        )
    builder = GraphBuilder(dtype)
    builder.reserve(initializers)
    builder.reserve(name for node in graph.node for name in (*node.input, *node.output, node.name))
    before: dict[int, list[Any]] = {}
    done: list[str] = []
    for layer, softmax in zip(layers, softmaxes, strict=True):
        qk, pv = _qk_matmul(softmax, producers, initializers), _pv_matmul(softmax, consumers)
        for node, slots in ((qk, ("q", "k")), (pv, ("p", "v"))):
            for index, which in enumerate(slots):
                key = f"{layer}.{which}"
                if key not in ranges:
                    raise ExportError(f"no calibrated range for {key}")
                qdq, x_dq = per_tensor_qdq_nodes(node.input[index], ranges[key], f"{key}/input", builder)
                before.setdefault(id(node), []).extend(qdq)
                node.input[index] = x_dq
                done.append(key)
    nodes: list[Any] = []
    for node in graph.node:
        nodes.extend(before.get(id(node), []))
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(builder.initializers)
    return done
