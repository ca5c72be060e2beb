"""Export of the real demo model (SmolLM2-135M) and perplexity of both files through ONNX Runtime.

The files are the deployment ones (float16 activations), the references are
PyTorch float32 (FP32 model, and W8A8 fake quantization per token), so the
differences are float16 arithmetic, not quantization: float16 keeps 11
significant bits (2^-11 ~ 4.9e-4 relative per operation), the same order as
the measured gaps (bench/bench_export.py; docs/benchmarks/export.md). The
quantization effect itself (fake-quant vs FP32) is a few percent of perplexity
on this model, which the 1.5 % bound on the INT8 file would not hide.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

SEQ_LEN = 256
CHUNKS = 2


@pytest.fixture(scope="module")
def demo_export(
    demo_loaded: Any, demo_float_graphs: Any, module_tmp: Callable[[str], Path]
) -> tuple[Path, Any]:
    """The plugin-encoded export, rewritten from the session's float16 trace (tests/demo_fixtures.py)."""
    from sq_trt.data import load_slices, tokenize_chunks
    from sq_trt.export.stage import ExportConfig, export_model

    out = module_tmp("demo") / "export"
    config = ExportConfig(act_mode="per_token", encoding="plugin")
    export_model(demo_loaded, out, config=config, float_graphs=demo_float_graphs)
    _, evaluation = load_slices()
    chunks = tokenize_chunks(demo_loaded.tokenizer, evaluation, seq_len=SEQ_LEN, max_chunks=CHUNKS)
    return out, chunks


def test_demo_export_sizes_and_manifest(demo_export: tuple[Path, Any], demo_loaded: Any) -> None:
    from sq_trt.models.registry import quantizable_linears

    out, _ = demo_export
    extra = json.loads((out / "manifest.json").read_text())["extra"]
    assert extra["quantized_linears"] == quantizable_linears(demo_loaded.model)
    assert len(extra["quantized_linears"]) == 30 * 7  # 30 layers x q, k, v, o, gate, up, down: exact
    # Linears (106 M params) become 1 byte each; the tied 28 M-param embedding stays FP16: 0.605 of the
    # fp16 weights by arithmetic, measured 0.6076 for this plugin export (bench/results/export.json,
    # 2026-11-23). FP16 linears give ~1.0, an INT8 embedding too ~0.50: both fail.
    assert 0.55 < extra["size_ratio_int8_over_fp16"] < 0.65
    # Same arithmetic over fp32: 0.303, measured 0.3041 (same file); FP16 linears would give ~0.5.
    assert extra["size_ratio_int8_over_fp32"] < 0.33


def test_demo_perplexity_through_onnx_runtime_matches_pytorch(
    demo_export: tuple[Path, Any], demo_loaded: Any
) -> None:
    from sq_trt.quant.fakequant import apply_fake_quant
    from sq_trt.runtime.onnx import OnnxModelRunner
    from sq_trt.runtime.perplexity import perplexity

    out, chunks = demo_export
    fp32 = perplexity(demo_loaded.model, chunks, progress=False)
    fake_quant = copy.deepcopy(demo_loaded.model)
    apply_fake_quant(fake_quant, None, act_mode="per_token")
    w8a8 = perplexity(fake_quant, chunks, progress=False)
    del fake_quant
    ort_fp16 = perplexity(OnnxModelRunner(out / "model.fp16.onnx").run, chunks, progress=False)
    ort_int8 = perplexity(OnnxModelRunner(out / "model.int8.onnx").run, chunks, progress=False)
    # FP16 graph vs FP32: measured 10.528 vs 10.527 (2,048 tokens) and 11.294 vs 11.294 (4,096 tokens),
    # 2026-11-23 (docs/benchmarks/export.md, bench/results/export.json, bmm.json). 1 % is ~100x that and
    # under the ~3 % W8A8 costs, so a quantized or miswired FP16 file fails.
    assert ort_fp16 == pytest.approx(fp32, rel=0.01)
    # The INT8 file runs in float16, the reference in float32: float16 rounding moves some
    # activations across a .5 boundary, each such token's int8 code moves one step, and over
    # 30 layers the two models become two different draws of the same quantization noise.
    # On 510 predictions that noise alone spreads perplexity by a few percent (measured here, 2026-11-23,
    # fbaf667: 2.6 %; the FP16-graph-vs-reference gap in docs/benchmarks/compare.md is 2.8 %), while
    # on 16,384 tokens the two agree to 0.1 point (+2.97 % vs +2.98 % naive per-token,
    # docs/benchmarks/pipeline.md and smoothquant.md). So 5 % here; exactness of the encoding
    # itself is tested bit for bit in float32 by tests/unit/export/test_qdq.py. Held on the AVX2 EPYC
    # too (issue 29's run, 2026-12-07); a wrong quantizer (per-tensor: +92-103 %, compare.md) fails.
    assert ort_int8 == pytest.approx(w8a8, rel=0.05)
    assert ort_int8 > ort_fp16  # quantization must cost something: a no-op rewrite would not
