"""The engine manifest names each fused GEMM's AOT variant (aligned, or the unaligned fallback)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from sq_trt.engine.builder import _plugin_facts
from sq_trt.engine.source import read_onnx_source


def _gemm(
    name: str, n: int, k: int, out_type: int
) -> tuple[onnx.NodeProto, list[onnx.TensorProto], onnx.ValueInfoProto]:
    weight = numpy_helper.from_array(np.zeros((n, k), np.int8), f"{name}.weight")
    scale = numpy_helper.from_array(np.ones(n, np.float32), f"{name}.w_scale")
    bias = numpy_helper.from_array(np.zeros(n, np.float32), f"{name}.bias")
    node = helper.make_node(
        "QuantW8A8Gemm", ["x", "smooth", weight.name, scale.name, bias.name], [f"{name}.y"], name=name,
        domain="sq_trt", has_smooth=1, has_bias=1,
    )  # fmt: skip
    return node, [weight, scale, bias], helper.make_tensor_value_info(f"{name}.y", out_type, ["m", n])


def test_each_gemm_node_names_the_variant_its_weight_gets(tmp_path: Path) -> None:
    nodes, inits, outputs = [], [numpy_helper.from_array(np.ones(576, np.float32), "smooth")], []
    for name, n, k, out_type in [
        ("q_proj", 576, 576, TensorProto.FLOAT16),  # a real hidden size: aligned
        ("odd_k", 576, 584, TensorProto.FLOAT16),  # K = 584: int8 rows not 16-byte multiples
        ("odd_n_fp16", 580, 576, TensorProto.FLOAT16),  # N = 580: fp16 rows of y not 16-byte multiples
        ("odd_n_fp32", 580, 576, TensorProto.FLOAT),  # ... but fp32 rows are
    ]:
        node, weights, out = _gemm(name, n, k, out_type)
        nodes.append(node)
        inits += weights
        outputs.append(out)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["m", 576])
    graph = helper.make_graph(nodes, "g", [x], outputs, initializer=inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("sq_trt", 1)]
    )
    path = tmp_path / "gemms.onnx"
    onnx.save(model, str(path))
    source = read_onnx_source(path)
    assert {n.name: n.gemm_variant for n in source.plugin_nodes} == {
        "q_proj": "aligned",
        "odd_k": "unaligned",
        "odd_n_fp16": "unaligned",
        "odd_n_fp32": "aligned",
    }
    assert _plugin_facts(source) == [
        {
            "name": "QuantW8A8Gemm",
            "version": "1",
            "namespace": "sq_trt",
            "nodes": 4,
            "gemm_variants": {"aligned": 2, "unaligned": 2},
        }
    ]
