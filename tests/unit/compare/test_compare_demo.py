"""compare on the demo model's exported ONNX files (SmolLM2-135M, a few held-out chunks)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from sq_trt.cli import main

pytestmark = pytest.mark.integration

SAMPLES, SEQ_LEN = 2, 128


@pytest.fixture(scope="module")
def demo_export(demo_naive_export: Path) -> Path:
    """Naive (unsmoothed) per-token W8A8 export of the demo model in portable ONNX ops, plus its FP16 twin.

    The session's (tests/demo_fixtures.py), shared with the build test: one trace per run.
    """
    return demo_naive_export


@pytest.fixture(scope="module")
def compare_dir(module_tmp: Callable[[str], Path]) -> Path:
    return module_tmp("demo") / "compare"


@pytest.fixture(scope="module")
def comparison(demo_export: Path, compare_dir: Path) -> dict[str, object]:
    out = compare_dir
    argv = ["compare", "--baseline", f"fp16={demo_export / 'model.fp16.onnx'}"]
    argv += ["--candidate", f"int8={demo_export / 'model.int8.onnx'}", "--candidate", "fp32=torch:demo"]
    argv += ["--candidate", "fakequant=torch-w8a8:demo", "--model", "demo"]
    argv += ["--samples", str(SAMPLES), "--seq-len", str(SEQ_LEN), "--no-progress", "--out", str(out)]
    # FP32 vs the FP16 baseline: top-1 100 % on this test's saved batch, W8A8 93.0 % (docs/benchmarks/
    # compare.md, "Finding", 2026-11-23): the gate fails a quantized or broken baseline.
    assert main([*argv, "--gate", "fp32:top1_agreement>=0.95"]) == 0
    return json.loads((out / "comparison.json").read_text())


def test_fp16_onnx_baseline_matches_the_pytorch_model(comparison: dict[str, object]) -> None:
    import torch

    from sq_trt.compare.dataloader import evaluation_slice
    from sq_trt.data import tokenize_chunks
    from sq_trt.models.loading import load_model
    from sq_trt.runtime.perplexity import perplexity

    fp32 = comparison["metrics"]["fp32"]["summary"]  # type: ignore[index]
    # FP16 rounding of a 135M model: the argmax flips only where the top two logits nearly tie.
    # Measured top-1 100 %, KL 1e-5 (compare.md, "Finding", 2026-11-23); W8A8 gives 93.0 % and KL 0.029,
    # so 0.97 (7 near-tie flips in 256) and 1e-3 (100x the one, 1/30 of the other) fail a quantized run.
    assert fp32["top1_agreement"] >= 0.97
    assert fp32["kl_mean"] < 1e-3
    # The baseline perplexity equals sq_trt.runtime.perplexity.perplexity of the float model on the same
    # held-out chunks (a separate implementation), up to FP16 rounding (well under 1 %): ORT FP16 vs
    # PyTorch FP32 measured 11.294 vs 11.294 and 10.528 vs 10.527 (export.md, 2026-11-23); W8A8 costs ~3 %.
    loaded = load_model("demo")
    chunks = tokenize_chunks(loaded.tokenizer, evaluation_slice(), seq_len=SEQ_LEN, max_chunks=SAMPLES)
    with torch.inference_mode():
        reference = perplexity(loaded.model, chunks, progress=False)
    assert fp32["ppl_baseline"] == pytest.approx(reference, rel=0.01)
    # Arithmetic: the same float32 model on the same tokens; only the batch shape (GEMM summation order)
    # and float32/float64 sums differ, ~1e-6 relative. A dropped or shifted target moves it by ~1e-2.
    assert fp32["ppl"] == pytest.approx(reference, rel=1e-4)  # the PyTorch runner is that model


def test_int8_onnx_is_close_to_the_fp16_baseline_and_to_its_pytorch_reference(
    comparison: dict[str, object], compare_dir: Path
) -> None:
    from sq_trt.compare.run import run_comparison

    int8 = comparison["metrics"]["int8"]["summary"]  # type: ignore[index]
    fakequant = comparison["metrics"]["fakequant"]["summary"]  # type: ignore[index]
    # DESIGN.md measured naive per-token W8A8 at +3 % perplexity on SmolLM2 (8k tokens); 256 tokens are noisier.
    # Measured on 4,096 tokens (compare.md, compare_4k.json, 2026-11-23): KL 0.031, +2.68 %, top-1 91.5 %
    # (this test's saved batch: KL 0.029, top-1 93.0 % vs FP32); two draws at this size differ by 2.8 %
    # (below). Naive per-tensor (KL 0.78, +103 %, 58 %) fails each bound; a no-op fails KL > 0.
    assert 0 < int8["kl_mean"] < 0.1
    assert -2 < int8["ppl_increase_pct"] < 10
    assert int8["top1_agreement"] >= 0.8
    # The ONNX graph and the PyTorch fake-quant reference implement the same quantization, but the
    # graph computes in FP16: measured 2.8 % apart in perplexity on these 256 tokens (23.76 vs 23.11,
    # 2026-11-23, 2a2c57f; held on the AVX2 EPYC in issue 29's run, 2026-12-07),
    # while an unrelated quantization (per-tensor) lands 100 % away. 5 % catches a real divergence.
    assert int8["ppl"] == pytest.approx(fakequant["ppl"], rel=0.05)
    # Replay the saved first batch with the reference as the baseline: the INT8 graph picks the
    # reference's next token almost everywhere (measured 94.5 %, compare.md "Finding", 2026-11-23; the
    # draws of int8_fidelity.md agree 95.5-95.8 % on 4,096 tokens). It fails another quantization (58 %),
    # not the float model (93 %): the KL and perplexity checks above catch a no-op.
    replay = run_comparison([], "fakequant", loaded=compare_dir, progress=False)
    assert replay.metrics["int8"]["summary"]["top1_agreement"] >= 0.9
    assert comparison["data"]["tokens"] == SAMPLES * SEQ_LEN  # type: ignore[index]
    assert comparison["data"]["role"] == "evaluation"  # type: ignore[index]
