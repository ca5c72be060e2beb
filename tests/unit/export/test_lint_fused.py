"""The Q/DQ lint's ``fused-gemm`` rule: a clean fused graph passes, each malformed node is named."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from sq_trt import plugin_spec
from sq_trt.errors import ExportError
from sq_trt.export.fused import plugin_node
from sq_trt.export.lint import find_qdq_problems, lint_qdq

K, N = 8, 4


def _clean_model() -> onnx.ModelProto:
    """A norm feeding two W8A8 GEMMs, and a QuantW8A8Gemm quantizing its own input."""
    inits = {
        "gamma": np.ones(K, np.float16),
        "w1": np.ones((N, K), np.int8),
        "w2": np.full((N, K), -3, np.int8),
        "w3": np.ones((K, N), np.int8),  # [N=K, K=N]: the second layer maps N back to K
        "scale": np.full(N, 0.01, np.float32),
        "scale3": np.full(K, 0.02, np.float32),
        "bias": np.zeros(N, np.float32),
        "bias3": np.ones(K, np.float32),
        "smooth": np.full(N, 0.5, np.float32),
    }
    nodes = [
        plugin_node(
            plugin_spec.RMSNORM_PER_TOKEN_QUANT, ["x", "gamma"], ["x_q", "amax"], "norm", epsilon=1e-6
        ),
        plugin_node(
            plugin_spec.W8A8_GEMM, ["x_q", "amax", "w1", "scale", "bias"], ["y1"], "gemm1", has_bias=0
        ),
        plugin_node(
            plugin_spec.W8A8_GEMM, ["x_q", "amax", "w2", "scale", "bias"], ["y2"], "gemm2", has_bias=1
        ),
        helper.make_node("Add", ["y1", "y2"], ["h"], name="add"),
        plugin_node(
            plugin_spec.QUANT_W8A8_GEMM,
            ["h", "smooth", "w3", "scale3", "bias3"],
            ["y"],
            "qgemm",
            has_smooth=1,
            has_bias=1,
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "fused",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["m", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["m", K])],
        initializer=[numpy_helper.from_array(value, name) for name, value in inits.items()],
    )
    opsets = [helper.make_opsetid("", 20), helper.make_opsetid(plugin_spec.ONNX_DOMAIN, 1)]
    return helper.make_model(graph, opset_imports=opsets)


def _node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(node for node in model.graph.node if node.name == name)


def _set_init(model: onnx.ModelProto, name: str, array: np.ndarray) -> None:
    init = next(i for i in model.graph.initializer if i.name == name)
    init.CopyFrom(numpy_helper.from_array(array, name))


def _set_attr(node: onnx.NodeProto, name: str, value: object) -> None:
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend([*kept, helper.make_attribute(name, value)])


def _x_q_from_graph_input(m: onnx.ModelProto) -> None:
    m.graph.input.append(helper.make_tensor_value_info("raw_q", TensorProto.INT8, ["m", K]))
    _node(m, "gemm1").input[0] = "raw_q"


def _amax_from_another_node(m: onnx.ModelProto) -> None:
    m.graph.node.insert(
        1, plugin_node(plugin_spec.PER_TOKEN_QUANT, ["x"], ["other_q", "other_amax"], "other_quant")
    )
    _node(m, "gemm1").input[1] = "other_amax"


def _norm_output_to_float_op(m: onnx.ModelProto) -> None:
    m.graph.node.append(helper.make_node("Cast", ["amax"], ["amax32"], name="leak", to=TensorProto.FLOAT))
    m.graph.output.append(helper.make_tensor_value_info("amax32", TensorProto.FLOAT, ["m", 1]))


def _no_domain_import(m: onnx.ModelProto) -> None:
    kept = [o for o in m.opset_import if o.domain != plugin_spec.ONNX_DOMAIN]
    del m.opset_import[:]
    m.opset_import.extend(kept)


BREAKAGES: dict[str, tuple[Callable[[onnx.ModelProto], None], str]] = {
    # name: (how to break the clean model, node the fused-gemm problem must name)
    "float_weight": (lambda m: _set_init(m, "w1", np.ones((N, K), np.float32)), "gemm1"),
    "weight_not_2d": (lambda m: _set_init(m, "w1", np.ones(N * K, np.int8)), "gemm1"),
    "weight_from_graph_input": (lambda m: _node(m, "gemm1").input.__setitem__(2, "x"), "gemm1"),
    "scale_wrong_length": (lambda m: _set_init(m, "scale", np.full(N + 1, 0.01, np.float32)), "gemm1"),
    "scale_not_positive": (lambda m: _set_init(m, "scale", np.zeros(N, np.float32)), "gemm2"),
    "scale_float16": (lambda m: _set_init(m, "scale", np.full(N, 0.01, np.float16)), "gemm1"),
    "bias_not_finite": (lambda m: _set_init(m, "bias", np.full(N, np.inf, np.float32)), "gemm2"),
    "has_bias_not_0_1": (lambda m: _set_attr(_node(m, "gemm1"), "has_bias", 2), "gemm1"),
    "has_smooth_missing": (
        lambda m: _node(m, "qgemm").attribute.remove(
            next(a for a in _node(m, "qgemm").attribute if a.name == "has_smooth")
        ),
        "qgemm",
    ),
    "smooth_wrong_length": (lambda m: _set_init(m, "smooth", np.ones(K, np.float32)), "qgemm"),
    "missing_input": (lambda m: _node(m, "gemm2").input.pop(), "gemm2"),
    "x_q_from_graph_input": (_x_q_from_graph_input, "gemm1"),
    "amax_from_another_quantizer": (_amax_from_another_node, "gemm1"),
    "norm_width_not_k": (lambda m: _set_init(m, "gamma", np.ones(K + 2, np.float16)), "gemm1"),
    "norm_output_leaks": (_norm_output_to_float_op, "norm"),
    "norm_without_epsilon": (lambda m: _set_attr(_node(m, "norm"), "epsilon", 0.0), "norm"),
    "domain_not_imported": (_no_domain_import, "gemm1"),
}


def test_clean_fused_graph_passes() -> None:
    model = _clean_model()
    onnx.checker.check_model(model)
    assert find_qdq_problems(model) == []
    lint_qdq(model)


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_each_malformed_fused_node_is_caught_and_named(breakage: str) -> None:
    model = _clean_model()
    breaker, node = BREAKAGES[breakage]
    breaker(model)
    problems = find_qdq_problems(model)
    assert any(p.rule == "fused-gemm" and p.node == node for p in problems), problems
    with pytest.raises(ExportError, match=r"Q/DQ lint failed: \[fused-gemm\]"):
        lint_qdq(model)


def test_a_fused_node_without_its_plugin_attributes_is_caught_by_the_plugin_rule() -> None:
    """Namespace, version and aot are checked once, for every sq_trt node, by the `plugin` rule."""
    model = _clean_model()
    _set_attr(_node(model, "qgemm"), "plugin_namespace", "other")
    problems = find_qdq_problems(model)
    assert [(p.rule, p.node) for p in problems] == [("plugin", "qgemm")], problems
    with pytest.raises(ExportError, match=r"Q/DQ lint failed: \[plugin\] node 'qgemm': attribute plugin_namespace"):
        lint_qdq(model)
