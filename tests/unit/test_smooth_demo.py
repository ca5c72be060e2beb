"""SmoothQuant on the real demo model (SmolLM2-135M): calibrate, smooth, fake-quantize, evaluate."""

from __future__ import annotations

import math
import os

import pytest
import torch

from sq_trt.calibrate.stage import calibrate
from sq_trt.data import load_slices, tokenize_chunks
from sq_trt.quant.fakequant import apply_fake_quant
from sq_trt.runtime.perplexity import perplexity
from sq_trt.smooth.stage import (
    SmoothConfig,
    check_equivalence,
    reference_outputs,
    smooth_model,
    smoothed_act_scales,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def demo():
    """A private copy of the demo model (this test smooths it in place; the shared fixture stays clean)."""
    from sq_trt.errors import ModelLoadError
    from sq_trt.models.demo import demo_model_dir
    from sq_trt.models.loading import load_model

    try:
        demo_model_dir(fetch=False)
    except ModelLoadError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"demo model not fetched: {exc}")
    return load_model("demo")


def test_smoothquant_on_the_demo_model(demo) -> None:
    calibration, evaluation = load_slices()
    calib = tokenize_chunks(demo.tokenizer, calibration, seq_len=256, max_chunks=4)
    held_out = tokenize_chunks(demo.tokenizer, evaluation, seq_len=256, max_chunks=2)
    fp32 = perplexity(demo.model, held_out, progress=False)

    scales = calibrate(demo, calib, progress=False)
    # The statistic SmoothQuant exists for: this model has strong per-channel outliers.
    q_in = scales.input_channel_amax["model.layers.5.self_attn.q_proj"]
    # Measured 7.9x (max 4.60, median 0.58) by the demo pipeline's 32 x 512 calibration (AVX2 EPYC,
    # 2026-12-07; not recorded for these 4 x 256 tokens); DESIGN.md: a q_proj input at 4.5 vs 0.41.
    # A statistic that is not per channel (a broadcast per-tensor max: 1x) fails.
    assert float(q_in.max() / q_in.median()) > 5

    probe = calib[:1, :64]
    reference = reference_outputs(demo.model, probe)
    result = smooth_model(demo.model, scales, SmoothConfig(alpha=0.5, include_optional=True))
    assert len(result.groups) == 4 * demo.model.config.num_hidden_layers
    # 30 layers of reassociated float32 products: the smooth stage's same check measured 1.7e-6
    # (norm->linear) and 2.3e-6 (with the pairs) (docs/benchmarks/smoothquant.md, stage costs,
    # 2026-11-23); 1e-3 is ~400x that, and a wrong fold is O(1).
    check_equivalence(demo.model, probe, reference, rtol=1e-3)
    smoothed = smoothed_act_scales(scales, result)
    down = "model.layers.5.mlp.down_proj"
    assert smoothed.input_amax[down] < scales.input_amax[down]  # outliers moved into the weights

    apply_fake_quant(demo.model, smoothed, act_mode="per_token")
    w8a8 = perplexity(demo.model, held_out, progress=False)
    assert math.isfinite(w8a8)
    # 510 predicted tokens: W8A8 per-token SmoothQuant lands within a few percent of FP32 (alpha 0.5
    # with pairs: +1.15 % on 16,384 tokens, smoothquant.md, 2026-11-23), and two draws of the noise on
    # 510 predictions differ by ~2.6 % (test_export_demo.py). 10% covers both; a collapsed quantizer
    # (per-tensor-like: +100-128 %) fails. Smoothing's gain is the benchmark's to show, not this bound's.
    assert w8a8 < fp32 * 1.10, (fp32, w8a8)
    assert torch.isfinite(reference).all()
