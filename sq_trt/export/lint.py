"""Q/DQ lint: TensorRT's explicit-quantization rules, checked on the ONNX before any build.

TensorRT (strongly typed, explicit quantization) accepts a Q/DQ graph only if:

* ``constant-scale``: every QuantizeLinear/DequantizeLinear scale is a build-time
  constant (an initializer or a ``Constant`` node);
* ``zero-point``: zero points are absent or all 0, and of type int8;
* ``int8-only``: quantized tensors are INT8 (no uint8 / int4 / fp8 here);
* ``weight-axis``: a DQ of a weight feeding a MatMul is per output channel:
  ``axis`` is the weight's last axis (N of ``[K, N]``) and the scale has N entries;
* ``dangling``: every Q feeds only DQs, every DQ's output is used, every DQ's
  input comes from a Q, an int8 initializer or an int8-producing node;
* ``plugin``: every ``sq_trt``-domain node carries ``plugin_namespace``,
  ``plugin_version`` (as :mod:`sq_trt.plugin_spec` defines them) and ``aot=1``
  (the plugins have only an ahead-of-time kernel; without it TensorRT looks for a
  JIT one), its int8 output feeds DequantizeLinear with the constant scale 1/127,
  and its domain is imported;
* ``fused-gemm``: each ``W8A8Gemm`` / ``QuantW8A8Gemm`` node (and the norm + quantization
  node feeding a ``W8A8Gemm``) has the inputs, initializers and attributes of
  :mod:`sq_trt.plugin_spec`: int8 weight ``[N, K]``, positive float32 scales ``[N]``,
  float32 bias ``[N]``, float32 smoothing ``[K]``, 0/1 flags; a ``W8A8Gemm`` reads
  ``x_q`` and ``amax`` from the same quantization node, whose outputs feed only GEMMs.

:func:`lint_qdq` raises on the first broken rule with the node's name;
:func:`find_qdq_problems` returns them all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sq_trt import plugin_spec
from sq_trt.errors import ExportError

if TYPE_CHECKING:
    import numpy as np
    import onnx

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


@dataclass(frozen=True)
class LintProblem:
    """One broken rule: which rule, which node, what is wrong."""

    rule: str
    node: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] node {self.node!r}: {self.message}"


class _Constants:
    """Constant tensors of a graph: initializers and ``Constant`` node outputs."""

    def __init__(self, graph: Any) -> None:
        self.tensors: dict[str, Any] = {init.name: init for init in graph.initializer}
        self.constant_nodes: dict[str, Any] = {}
        for node in graph.node:
            if node.op_type == "Constant" and node.output:
                self.constant_nodes[node.output[0]] = node

    def __contains__(self, name: str) -> bool:
        return name in self.tensors or name in self.constant_nodes

    def array(self, name: str) -> np.ndarray | None:
        import onnx
        from onnx import numpy_helper

        if name in self.tensors:
            return numpy_helper.to_array(self.tensors[name])
        node = self.constant_nodes.get(name)
        if node is not None:
            for attribute in node.attribute:
                if attribute.name == "value":
                    return numpy_helper.to_array(onnx.helper.get_attribute_value(attribute))
        return None

    def elem_type(self, name: str) -> int | None:
        if name in self.tensors:
            return int(self.tensors[name].data_type)
        node = self.constant_nodes.get(name)
        if node is not None:
            for attribute in node.attribute:
                if attribute.name == "value":
                    return int(attribute.t.data_type)
        return None


def _attr(node: Any, name: str, default: Any) -> Any:
    import onnx

    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def _int8_producers(graph: Any) -> set[str]:
    """Tensors produced as int8 by non-Q nodes (plugin x_q, Cast to int8)."""
    import onnx

    produced: set[str] = set()
    for node in graph.node:
        is_int8_cast = node.op_type == "Cast" and _attr(node, "to", None) == onnx.TensorProto.INT8
        is_plugin = node.domain == plugin_spec.ONNX_DOMAIN and node.op_type == plugin_spec.PER_TOKEN_QUANT
        if (is_int8_cast or is_plugin) and node.output:
            produced.add(node.output[0])
    return produced


@dataclass
class _GraphIndex:
    """What every rule looks up: constants, who consumes and who produces each tensor."""

    constants: _Constants
    consumers: dict[str, list[Any]]
    producers: dict[str, Any]
    graph_outputs: set[str]
    int8_made: set[str]

    @classmethod
    def of(cls, graph: Any) -> _GraphIndex:
        consumers: dict[str, list[Any]] = {}
        producers: dict[str, Any] = {}
        for node in graph.node:
            for name in node.input:
                consumers.setdefault(name, []).append(node)
            for name in node.output:
                producers[name] = node
        graph_outputs = {value.name for value in graph.output}
        return cls(_Constants(graph), consumers, producers, graph_outputs, _int8_producers(graph))


def find_qdq_problems(model: onnx.ModelProto) -> list[LintProblem]:
    """Every Q/DQ rule broken in ``model`` (empty when it is clean)."""
    graph = model.graph
    index = _GraphIndex.of(graph)
    problems: list[LintProblem] = []

    def add(rule: str, node: Any, message: str) -> None:
        problems.append(LintProblem(rule, node.name or f"<{node.op_type} -> {list(node.output)}>", message))

    for node in graph.node:
        if node.op_type not in QDQ_OPS:
            continue
        _check_scale(node, index.constants, add)
        _check_zero_point(node, index.constants, add)
        if node.op_type == "QuantizeLinear":
            _check_quantize_users(node, index, add)
        else:
            _check_dequantize_input(node, index, add)

    for node in graph.node:
        if node.domain == plugin_spec.ONNX_DOMAIN:
            _check_plugin_attributes(node, add)
            if node.op_type in _GEMM_OPS or _feeds_gemm(node, index.consumers):
                _check_fused_gemm(node, index.constants, index.consumers, index.producers, model, add)
            else:
                _check_plugin(node, index.constants, index.consumers, model, add)
    return problems


def _check_scale(node: Any, constants: _Constants, add: Any) -> None:
    import numpy as np

    scale = node.input[1] if len(node.input) > 1 else ""
    if not scale or scale not in constants:
        add(
            "constant-scale",
            node,
            f"scale {scale!r} is not an initializer or Constant; TensorRT needs it at build time",
        )
        return
    values = constants.array(scale)
    if values is not None and (not np.all(np.isfinite(values)) or np.any(values.astype(np.float64) <= 0)):
        add("constant-scale", node, f"scale {scale!r} has non-positive or non-finite values")


def _check_zero_point(node: Any, constants: _Constants, add: Any) -> None:
    """The zero point (and output_dtype) make the quantized type INT8, symmetric."""
    import numpy as np
    import onnx

    zero_point = node.input[2] if len(node.input) > 2 else ""
    if zero_point:
        if zero_point not in constants:
            add("zero-point", node, f"zero point {zero_point!r} is not a constant")
        else:
            values = constants.array(zero_point)
            if constants.elem_type(zero_point) != onnx.TensorProto.INT8:
                add(
                    "int8-only",
                    node,
                    f"zero point {zero_point!r} is not int8, so the quantized type is not INT8",
                )
            if values is not None and np.any(values != 0):
                add("zero-point", node, f"zero point {zero_point!r} is not 0 (TensorRT is symmetric only)")
    elif node.op_type == "QuantizeLinear":
        add(
            "int8-only",
            node,
            "QuantizeLinear without a zero point outputs uint8; give an int8 zero point of 0",
        )
    if _attr(node, "output_dtype", 0) not in (0, onnx.TensorProto.INT8):
        add("int8-only", node, f"output_dtype {_attr(node, 'output_dtype', 0)} is not INT8")


def _check_quantize_users(node: Any, index: _GraphIndex, add: Any) -> None:
    users = index.consumers.get(node.output[0], [])
    if not users or any(user.op_type != "DequantizeLinear" for user in users):
        add(
            "dangling",
            node,
            f"its output feeds {[u.op_type for u in users] or 'nothing'}, expected DequantizeLinear",
        )


def _check_dequantize_input(node: Any, index: _GraphIndex, add: Any) -> None:
    """A DQ's output is used, and its input is an int8 constant (a weight), a Q or an int8 producer."""
    import onnx

    x = node.input[0]
    if node.output[0] not in index.graph_outputs and not index.consumers.get(node.output[0]):
        add("dangling", node, "its output is not used")
    if x in index.constants:
        if index.constants.elem_type(x) != onnx.TensorProto.INT8:
            add("int8-only", node, f"quantized input {x!r} is not an int8 tensor")
        _check_weight_axis(node, x, index.constants, index.consumers, add)
    elif x not in index.int8_made:
        source = index.producers.get(x)
        if source is None or source.op_type != "QuantizeLinear":
            add(
                "dangling",
                node,
                f"its input {x!r} comes from {source.op_type if source else 'a graph input'}, not a Q",
            )


def _check_weight_axis(
    node: Any, x: str, constants: _Constants, consumers: dict[str, list[Any]], add: Any
) -> None:
    weight = constants.array(x)
    scale = constants.array(node.input[1]) if node.input[1] in constants else None
    if weight is None or scale is None or scale.size <= 1:
        return
    axis = int(_attr(node, "axis", 1))
    axis = axis + weight.ndim if axis < 0 else axis
    feeds_matmul_b = any(
        user.op_type in ("MatMul", "Gemm") and len(user.input) > 1 and user.input[1] == node.output[0]
        for user in consumers.get(node.output[0], [])
    )
    expected = weight.ndim - 1 if feeds_matmul_b else axis
    if axis != expected or scale.shape != (weight.shape[expected],):
        add(
            "weight-axis",
            node,
            f"per-channel weight scale has axis {axis} and shape {scale.shape} for weight {weight.shape}; "
            f"expected axis {expected} (output channels) with {weight.shape[expected]} scales",
        )


# What TensorRT's parser needs on every sq_trt node, whatever the op (PLUGIN.md).
_PLUGIN_ATTRIBUTES = (
    ("plugin_namespace", plugin_spec.PLUGIN_NAMESPACE, "TensorRT finds the plugin by it"),
    ("plugin_version", plugin_spec.PLUGIN_VERSION, "TensorRT finds the plugin by it"),
    ("aot", 1, "it selects the ahead-of-time kernel, the only one the plugins have"),
)


def _check_plugin_attributes(node: Any, add: Any) -> None:
    for name, expected, why in _PLUGIN_ATTRIBUTES:
        value = _attr(node, name, None)
        value = value.decode() if isinstance(value, bytes) else value
        if value != expected:
            add("plugin", node, f"attribute {name}={value!r}, expected {expected!r} ({why})")


def _check_plugin(
    node: Any, constants: _Constants, consumers: dict[str, list[Any]], model: Any, add: Any
) -> None:
    import numpy as np

    if node.op_type not in (plugin_spec.PER_TOKEN_QUANT, plugin_spec.RMSNORM_PER_TOKEN_QUANT):
        add("plugin", node, f"unknown {plugin_spec.ONNX_DOMAIN} op {node.op_type!r}")
        return
    if not any(entry.domain == plugin_spec.ONNX_DOMAIN for entry in model.opset_import):
        add("plugin", node, f"the model does not import the {plugin_spec.ONNX_DOMAIN!r} opset domain")
    users = consumers.get(node.output[0], []) if node.output else []
    if not users or any(user.op_type != "DequantizeLinear" for user in users):
        add(
            "plugin",
            node,
            f"its int8 output feeds {[u.op_type for u in users] or 'nothing'}, expected DequantizeLinear",
        )
        return
    for user in users:
        scale = constants.array(user.input[1]) if len(user.input) > 1 and user.input[1] in constants else None
        if (
            scale is None
            or scale.size != 1
            or not np.isclose(float(scale.reshape(-1)[0]), plugin_spec.DQ_SCALE, rtol=1e-3)
        ):
            add("plugin", node, f"DequantizeLinear {user.name!r} after it must have the constant scale 1/127")


def linear_encoding(index: _GraphIndex, name: str) -> str | None:
    """How the graph quantizes linear ``name``'s input: ``per_tensor``, ``per_token``, or None (not quantized).

    Found from its int8 weight (``<name>.weight_int8``): read by an ``sq_trt`` GEMM node (per token),
    or dequantized into a MatMul whose activation is ``DequantizeLinear`` of a ``QuantizeLinear``
    (static per tensor) or of an int8 per-token quantizer (plugin node or portable ``Cast``).
    """
    weight = f"{name}.weight_int8"
    for user in index.consumers.get(weight, []):
        if user.op_type in _GEMM_OPS and user.domain == plugin_spec.ONNX_DOMAIN:
            return "per_token"
        if user.op_type != "DequantizeLinear":
            continue
        for matmul in index.consumers.get(user.output[0], []):
            if matmul.op_type != "MatMul":
                continue
            act_dq = index.producers.get(matmul.input[0])
            if act_dq is None or act_dq.op_type != "DequantizeLinear":
                return None
            source = index.producers.get(act_dq.input[0])
            if source is not None and source.op_type == "QuantizeLinear":
                return "per_tensor"
            if act_dq.input[0] in index.int8_made:
                return "per_token"
    return None


def find_plan_problems(model: onnx.ModelProto, plan: Mapping[str, str]) -> list[LintProblem]:
    """Every linear whose encoding in ``model`` is not the mode ``plan`` gives it (empty when they agree)."""
    index = _GraphIndex.of(model.graph)
    problems = []
    for name, mode in plan.items():
        found = linear_encoding(index, name)
        if found != mode:
            problems.append(
                LintProblem("plan", name, f"the quant plan says {mode}, the graph has {found or 'no INT8 linear'}")
            )
    return problems


def lint_qdq(model: onnx.ModelProto, *, plan: Mapping[str, str] | None = None) -> None:
    """Raise on the first broken Q/DQ rule, or on a linear encoded in another mode than ``plan`` gives it.

    Args:
        model: The INT8 graph.
        plan: Module name -> ``per_token`` / ``per_tensor`` (``quant_plan.json``); None skips that check.

    Raises:
        ExportError: Naming the rule, the node and what is wrong (and how many more problems there are).
    """
    problems = find_qdq_problems(model)
    if plan is not None:
        problems += find_plan_problems(model, plan)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ExportError(
            f"Q/DQ lint failed: {problems[0]}{more}; TensorRT would reject or mis-build this graph"
        )


# --- fused-gemm: the W8A8 GEMM nodes and the quantization nodes feeding them ---------------------------

_GEMM_OPS = (plugin_spec.W8A8_GEMM, plugin_spec.QUANT_W8A8_GEMM)
_QUANT_OPS = (
    plugin_spec.PER_TOKEN_QUANT,
    plugin_spec.RMSNORM_PER_TOKEN_QUANT,
    plugin_spec.LAYERNORM_PER_TOKEN_QUANT,
)


def _feeds_gemm(node: Any, consumers: dict[str, list[Any]]) -> bool:
    return any(
        user.op_type in _GEMM_OPS and user.domain == plugin_spec.ONNX_DOMAIN
        for out in node.output
        for user in consumers.get(out, [])
    )


def _check_fused_gemm(
    node: Any,
    constants: _Constants,
    consumers: dict[str, list[Any]],
    producers: dict[str, Any],
    model: Any,
    add: Any,
) -> None:
    """The ``fused-gemm`` rule for one ``sq_trt`` node (a GEMM, or a quantizer feeding GEMMs)."""

    def problem(message: str) -> None:
        add("fused-gemm", node, message)

    # plugin_namespace / plugin_version / aot: the `plugin` rule checks them on every sq_trt node.
    if not any(entry.domain == plugin_spec.ONNX_DOMAIN for entry in model.opset_import):
        problem(f"the model does not import the {plugin_spec.ONNX_DOMAIN!r} opset domain")
    if node.op_type in _GEMM_OPS:
        _check_gemm(node, constants, producers, problem)
    elif node.op_type in _QUANT_OPS:
        _check_gemm_feeder(node, constants, consumers, problem)
    else:
        problem(f"unknown {plugin_spec.ONNX_DOMAIN} op {node.op_type!r} feeding a W8A8 GEMM")


def _flag_ok(node: Any, name: str, problem: Any) -> bool:
    value = _attr(node, name, None)
    if value not in (0, 1):
        problem(f"attribute {name}={value!r}, expected the int 0 or 1")
        return False
    return bool(value)


def _check_gemm(node: Any, constants: _Constants, producers: dict[str, Any], problem: Any) -> None:
    import numpy as np
    import onnx

    if len(node.input) != 5 or len(node.output) != 1 or not all(node.input):
        problem(f"has {len(node.input)} inputs and {len(node.output)} outputs, expected 5 and 1")
        return
    weight = constants.array(node.input[2])
    if weight is None or constants.elem_type(node.input[2]) != onnx.TensorProto.INT8 or weight.ndim != 2:
        problem(f"weight {node.input[2]!r} must be an int8 [N, K] initializer")
        return
    n, k = weight.shape
    for position, what, size, positive in ((3, "w_scale", n, True), (4, "bias", n, False)):
        values = constants.array(node.input[position])
        if values is None or constants.elem_type(node.input[position]) != onnx.TensorProto.FLOAT:
            problem(f"{what} {node.input[position]!r} must be a float32 initializer of shape [{size}]")
        elif values.shape != (size,) or not np.all(np.isfinite(values)) or (positive and np.any(values <= 0)):
            rule = "positive and finite" if positive else "finite"
            problem(f"{what} {node.input[position]!r} has shape {values.shape}; expected [{size}], {rule}")
    _flag_ok(node, "has_bias", problem)
    if node.op_type == plugin_spec.QUANT_W8A8_GEMM:
        smooth = constants.array(node.input[1])
        if smooth is None or constants.elem_type(node.input[1]) != onnx.TensorProto.FLOAT:
            problem(f"smooth {node.input[1]!r} must be a float32 initializer of shape [{k}]")
        elif smooth.shape != (k,) or not np.all(np.isfinite(smooth)) or np.any(smooth <= 0):
            problem(f"smooth {node.input[1]!r} has shape {smooth.shape}; expected [{k}], positive and finite")
        _flag_ok(node, "has_smooth", problem)
        return
    source = producers.get(node.input[0])
    if (
        source is None
        or source.domain != plugin_spec.ONNX_DOMAIN
        or source.op_type not in _QUANT_OPS
        or list(source.output[:2]) != list(node.input[:2])
    ):
        kind = f"{source.op_type} {source.name!r}" if source is not None else "a graph input"
        problem(
            f"its x_q and amax must be outputs 0 and 1 of one sq_trt quantization node, found x_q from {kind}"
        )
    else:
        _check_norm_width(source, constants, k, problem)


def _check_norm_width(source: Any, constants: _Constants, k: int, problem: Any) -> None:
    for name in source.input[1:]:
        values = constants.array(name)
        if values is not None and values.shape != (k,):
            problem(f"its quantizer {source.name!r} has {name!r} of shape {values.shape}, expected [{k}] (K)")


def _check_gemm_feeder(
    node: Any, constants: _Constants, consumers: dict[str, list[Any]], problem: Any
) -> None:
    if len(node.output) != 2:
        problem(f"has {len(node.output)} outputs, expected 2 (x_q, amax)")
        return
    for position, out in enumerate(node.output):
        users = consumers.get(out, [])
        wrong = [
            u for u in users if u.op_type != plugin_spec.W8A8_GEMM or list(u.input).index(out) != position
        ]
        if not users or wrong:
            found = [u.op_type for u in wrong] or "nothing"
            problem(
                f"output {position} {out!r} feeds {found}; the int8 codes and amax must feed W8A8Gemm only"
            )
    if node.op_type != plugin_spec.PER_TOKEN_QUANT:
        epsilon = _attr(node, "epsilon", None)
        if not isinstance(epsilon, float) or not epsilon > 0:
            problem(f"attribute epsilon={epsilon!r}, expected a positive float")
        for name in node.input[1:]:
            if name not in constants:
                problem(f"norm parameter {name!r} must be an initializer (the plugin reads it at build time)")
