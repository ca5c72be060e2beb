"""The exporter's optimizer: onnxscript's stock pipeline minus one slow rule must give the same graph."""

from __future__ import annotations

import warnings
from typing import Any

import onnx
import onnx_ir as ir
import pytest
from onnxscript.optimizer import optimize_ir

from sq_trt.export import onnx_export
from sq_trt.export.onnx_export import export_float_onnx
from sq_trt.export.past import export_float_onnx_with_past
from sq_trt.models.loading import load_model

# Rotary (llama, qwen2), learned-position (gpt2) and encoder (bert) graphs, with and without a KV
# cache, both dtypes: one trace each (mistral/opt share these graphs' ops; SmolLM2 was checked equal
# once by hand: 38.2 s stock, 3.8 s trimmed).
CASES = [
    ("llama", True, "float16"),
    ("qwen2", False, "float32"),
    ("gpt2", True, "float16"),
    ("bert", False, "float16"),
]


def _without_debug_info(proto: onnx.ModelProto) -> bytes:
    for node in proto.graph.node:
        node.doc_string = ""
        del node.metadata_props[:]
    return proto.SerializeToString(deterministic=True)


@pytest.mark.parametrize(("family", "with_past", "dtype"), CASES)
def test_the_trimmed_optimizer_gives_the_stock_optimizers_graph(
    family: str, with_past: bool, dtype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The exporter's optimizer is spied on, not replaced: the raw graph it receives is kept, and
    # both optimizers run on copies of it (copies: the exporter's in-memory IR carries metadata a
    # proto round trip drops, so a copy is compared with a copy).
    raw: list[onnx.ModelProto] = []
    trimmed = onnx_export._optimize_ir

    def keep_raw(graph: Any) -> None:
        raw.append(ir.to_proto(graph))
        trimmed(graph)

    monkeypatch.setattr(onnx_export, "_optimize_ir", keep_raw)
    loaded = load_model(f"tiny:{family}")
    tracer = export_float_onnx_with_past if with_past else export_float_onnx
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tracer(loaded.model, loaded.spec, dtype=dtype)
    assert len(raw) == 1

    ours, stock = ir.from_proto(raw[0]), ir.from_proto(raw[0])
    trimmed(ours)
    optimize_ir(stock, should_fold=onnx_export._keep_parameter_transposes)
    assert len(ir.to_proto(ours).graph.node) < len(raw[0].graph.node), "the optimizer did nothing"
    assert _without_debug_info(ir.to_proto(ours)) == _without_debug_info(ir.to_proto(stock))


def test_the_trimmed_rules_are_the_stock_rules_minus_the_slow_one() -> None:
    from onnxscript import rewriter

    stock = {rule.name for rule in rewriter._DEFAULT_REWRITE_RULES}
    assert onnx_export._SLOW_RULES <= stock, "onnxscript renamed the rule: the trim is a no-op"
