"""The Q/DQ lint accepts a clean graph and names the node of each broken TensorRT rule."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from sq_trt import plugin_spec
from sq_trt.errors import ExportError
from sq_trt.export.lint import find_qdq_problems, lint_qdq
from sq_trt.export.qdq import plugin_per_token_node

K, N = 8, 4


def _clean_model() -> onnx.ModelProto:
    """Two quantized matmuls: per-tensor static Q/DQ, and per-token through the plugin node."""
    inits = [
        numpy_helper.from_array(np.ones((K, N), dtype=np.int8), "w_q"),
        numpy_helper.from_array(np.full(N, 0.01, dtype=np.float32), "w_scale"),
        numpy_helper.from_array(np.array(0.05, dtype=np.float32), "x_scale"),
        numpy_helper.from_array(np.array(0, dtype=np.int8), "x_zero"),
        numpy_helper.from_array(np.array(plugin_spec.DQ_SCALE, dtype=np.float32), "pt_scale"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["w_q", "w_scale"], ["w_dq"], name="w_dq", axis=1),
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["x_q"], name="x_q"),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zero"], ["x_dq"], name="x_dq"),
        helper.make_node("MatMul", ["x_dq", "w_dq"], ["y_static"], name="mm_static"),
        plugin_per_token_node("x", "pt_q", "pt_amax", "per_token"),
        helper.make_node("DequantizeLinear", ["pt_q", "pt_scale"], ["pt_dq"], name="pt_dq"),
        helper.make_node("MatMul", ["pt_dq", "w_dq"], ["pt_mm"], name="mm_token"),
        helper.make_node("Mul", ["pt_mm", "pt_amax"], ["y_token"], name="mul_amax"),
    ]
    graph = helper.make_graph(
        nodes,
        "lint",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", K])],
        [
            helper.make_tensor_value_info("y_static", TensorProto.FLOAT, ["m", N]),
            helper.make_tensor_value_info("y_token", TensorProto.FLOAT, ["m", N]),
        ],
        initializer=inits,
    )
    opsets = [helper.make_opsetid("", 20), helper.make_opsetid(plugin_spec.ONNX_DOMAIN, 1)]
    return helper.make_model(graph, opset_imports=opsets)


def _node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(node for node in model.graph.node if node.name == name)


def _init(model: onnx.ModelProto, name: str) -> onnx.TensorProto:
    return next(init for init in model.graph.initializer if init.name == name)


def _set_init(model: onnx.ModelProto, name: str, array: np.ndarray) -> None:
    _init(model, name).CopyFrom(numpy_helper.from_array(array, name))


def _scale_from_input(m: onnx.ModelProto) -> None:
    m.graph.input.append(helper.make_tensor_value_info("dyn_scale", TensorProto.FLOAT, []))
    _node(m, "x_q").input[1] = "dyn_scale"


def _drop_attr(node: onnx.NodeProto, name: str) -> None:
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept)


def _wrong_namespace(m: onnx.ModelProto) -> None:
    node = _node(m, "per_token")
    _drop_attr(node, "plugin_namespace")
    node.attribute.append(helper.make_attribute("plugin_namespace", "other"))


def _aot_false(m: onnx.ModelProto) -> None:
    node = _node(m, "per_token")
    _drop_attr(node, "aot")
    node.attribute.append(helper.make_attribute("aot", 0))


def _dangling_q(m: onnx.ModelProto) -> None:
    m.graph.node.append(helper.make_node("Relu", ["x_q"], ["relu_out"], name="relu"))
    m.graph.output.append(helper.make_tensor_value_info("relu_out", TensorProto.INT8, ["m", K]))


def _unused_dq(m: onnx.ModelProto) -> None:
    m.graph.node.append(
        helper.make_node("DequantizeLinear", ["w_q", "w_scale"], ["unused"], name="orphan_dq", axis=1)
    )


def _no_domain_import(m: onnx.ModelProto) -> None:
    kept = [o for o in m.opset_import if o.domain != plugin_spec.ONNX_DOMAIN]
    del m.opset_import[:]
    m.opset_import.extend(kept)


BREAKAGES: dict[str, tuple[Callable[[onnx.ModelProto], None], str, str]] = {
    # name: (how to break the clean model, rule expected, node expected in the message)
    "scale_is_graph_input": (_scale_from_input, "constant-scale", "x_q"),
    "negative_scale": (
        lambda m: _set_init(m, "w_scale", np.full(N, -0.01, np.float32)),
        "constant-scale",
        "w_dq",
    ),
    "nonzero_zero_point": (lambda m: _set_init(m, "x_zero", np.array(3, np.int8)), "zero-point", "x_q"),
    "uint8_zero_point": (lambda m: _set_init(m, "x_zero", np.array(0, np.uint8)), "int8-only", "x_q"),
    "q_without_zero_point": (lambda m: _node(m, "x_q").input.pop(), "int8-only", "x_q"),
    "uint8_weight": (lambda m: _set_init(m, "w_q", np.ones((K, N), np.uint8)), "int8-only", "w_dq"),
    "weight_axis_input_channels": (
        lambda m: _node(m, "w_dq").attribute[0].CopyFrom(helper.make_attribute("axis", 0)),
        "weight-axis",
        "w_dq",
    ),
    "q_feeds_non_dq": (_dangling_q, "dangling", "x_q"),
    "dq_output_unused": (_unused_dq, "dangling", "orphan_dq"),
    "plugin_without_version": (
        lambda m: _drop_attr(_node(m, "per_token"), "plugin_version"),
        "plugin",
        "per_token",
    ),
    "plugin_wrong_namespace": (_wrong_namespace, "plugin", "per_token"),
    # Without aot=1 TensorRT's parser looks for a JIT implementation, which the plugins do not have.
    "plugin_without_aot": (lambda m: _drop_attr(_node(m, "per_token"), "aot"), "plugin", "per_token"),
    "plugin_aot_false": (_aot_false, "plugin", "per_token"),
    "plugin_dq_scale_not_1_127": (
        lambda m: _set_init(m, "pt_scale", np.array(1.0, np.float32)),
        "plugin",
        "per_token",
    ),
    "plugin_domain_not_imported": (_no_domain_import, "plugin", "per_token"),
}


def test_clean_graph_passes() -> None:
    model = _clean_model()
    onnx.checker.check_model(model)
    assert find_qdq_problems(model) == []
    lint_qdq(model)


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_each_broken_rule_is_caught_and_names_the_node(breakage: str) -> None:
    model = _clean_model()
    breaker, rule, node = BREAKAGES[breakage]
    breaker(model)
    problems = find_qdq_problems(model)
    assert any(p.rule == rule and p.node == node for p in problems), problems
    with pytest.raises(ExportError, match="Q/DQ lint failed"):
        lint_qdq(model)


def test_exported_plugin_node_carries_what_the_parser_needs() -> None:
    # docs/PLUGIN.md: namespace, version and aot=1 (an INT: ONNX has no bool attribute).
    node = plugin_per_token_node("x", "x_q", "amax", "n")
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert node.domain == plugin_spec.ONNX_DOMAIN
    assert attributes == {
        "plugin_namespace": plugin_spec.PLUGIN_NAMESPACE.encode(),
        "plugin_version": plugin_spec.PLUGIN_VERSION.encode(),
        "aot": 1,
    }
