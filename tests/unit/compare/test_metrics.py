"""Metric functions against hand-computed values, and the streaming accumulators against the exact ones."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sq_trt.compare import metrics
from sq_trt.compare.metrics import (
    LanguageModelAccumulator,
    OutputErrorAccumulator,
    cosine_similarity,
    error_stats,
    histogram_quantile,
    kl_divergence,
    row_cosine,
    topk_agreement,
)
from sq_trt.runtime.perplexity import label_nll_sum, log_softmax, perplexity, perplexity_from_nll, token_nll

# Histogram quantiles return the upper edge of the bin holding the quantile: at most one
# bin above the exact value, a relative error of 2**-7 (bins are float32's top 16 bits).
BIN_RTOL = metrics.HIST_RELATIVE_WIDTH


def assert_within_one_bin(streamed: float, exact: float) -> None:
    # The edge is exclusive: strictly above the value, by at most one bin width.
    assert exact < streamed <= exact * (1 + BIN_RTOL) or exact == streamed == 0.0, (streamed, exact)


def test_error_stats_hand_computed() -> None:
    base = np.array([1.0, 2.0, -4.0, 0.0])
    cand = np.array([1.5, 2.0, -3.0, 0.0])
    stats = error_stats(base, cand)
    # |c - b| = [0.5, 0, 1, 0]; sorted [0, 0, 0.5, 1]; nearest rank: median = 2nd value, p99 = 4th.
    assert stats["abs_max"] == 1.0
    assert stats["abs_mean"] == 0.375
    assert stats["abs_median"] == 0.0
    assert stats["abs_p99"] == 1.0
    # relative = |c - b| / max(|b|, eps) = [0.5, 0, 0.25, 0 / eps = 0]; sorted [0, 0, 0.25, 0.5]
    assert stats["rel_max"] == 0.5
    assert stats["rel_mean"] == 0.1875
    assert stats["rel_median"] == 0.0
    assert stats["rel_p99"] == 0.5
    three = error_stats(np.zeros(3), np.array([1.0, 2.0, 3.0]))
    assert three["abs_median"] == 2.0


def test_error_stats_refuses_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="shape mismatch"):
        error_stats(np.zeros(3), np.zeros(4))


def test_cosine_hand_computed() -> None:
    assert cosine_similarity(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == 0.0
    assert cosine_similarity(np.array([1.0, 2.0]), np.array([2.0, 4.0])) == pytest.approx(1.0)
    assert cosine_similarity(np.array([1.0, 0.0]), np.array([-1.0, 0.0])) == -1.0
    assert cosine_similarity(np.zeros(3), np.zeros(3)) == 1.0
    # [1, 1] . [1, 0] / (sqrt 2 * 1)
    assert cosine_similarity(np.array([1.0, 1.0]), np.array([1.0, 0.0])) == pytest.approx(1 / math.sqrt(2))
    rows = row_cosine(np.array([[1.0, 0.0], [3.0, 4.0]]), np.array([[0.0, 2.0], [6.0, 8.0]]))
    np.testing.assert_allclose(rows, [0.0, 1.0])


def test_kl_hand_computed() -> None:
    # P = softmax([0, 0]) = [1/2, 1/2]; Q = softmax([ln 3, 0]) = [3/4, 1/4]
    # KL(P || Q) = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3)
    kl = kl_divergence(np.array([[0.0, 0.0]]), np.array([[math.log(3.0), 0.0]]))
    assert kl.shape == (1,)
    assert kl[0] == pytest.approx(0.5 * math.log(4 / 3), rel=1e-6)
    same = kl_divergence(np.array([[1.0, 2.0, 3.0]]), np.array([[1.0, 2.0, 3.0]]))
    assert same[0] == 0.0


def test_log_softmax_matches_definition() -> None:
    logits = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    expected = logits - math.log(math.exp(1) + math.exp(2) + math.exp(3))
    np.testing.assert_allclose(log_softmax(logits), expected, rtol=1e-6)


def test_topk_agreement_hand_computed() -> None:
    cand = np.array([[6.0, 5.0, 4.0, 3.0, 2.0, 1.0]] * 3)
    base = np.zeros((3, 6))
    base[0, 0] = 1  # baseline's top token is the candidate's top-1
    base[1, 4] = 1  # ... the candidate's 5th
    base[2, 5] = 1  # ... the candidate's 6th
    np.testing.assert_array_equal(topk_agreement(base, cand, 1), [True, False, False])
    np.testing.assert_array_equal(topk_agreement(base, cand, 5), [True, True, False])
    with pytest.raises(ValueError):
        topk_agreement(base, cand, 0)


def test_token_nll_uniform_logits_is_log_vocab() -> None:
    logits = np.zeros((2, 5, 4), dtype=np.float32)
    ids = np.array([[0, 1, 2, 3, 0], [3, 3, 3, 3, 3]])
    nll = token_nll(logits, ids)
    assert nll.shape == (2, 4)  # seq - 1 predictions per row
    np.testing.assert_allclose(nll, math.log(4), rtol=1e-6)
    assert perplexity_from_nll(float(nll.sum()), nll.size) == pytest.approx(4.0, rel=1e-6)
    # The same through perplexity() over any logits function: uniform over 4 tokens is 4.
    assert perplexity(lambda batch: np.zeros((*batch.shape, 4), np.float32), ids, progress=False) == pytest.approx(
        4.0, rel=1e-6
    )


def test_label_nll_sum_skips_rows_without_a_label() -> None:
    log_p = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8], [1 / 3, 1 / 3, 1 / 3]], dtype=np.float32))
    nll, count = label_nll_sum(log_p, np.array([1, -1, 0]))
    assert count == 2 and nll == pytest.approx(math.log(4) + math.log(3), rel=1e-6)


def test_token_nll_picks_the_next_token() -> None:
    # Position 0 predicts ids[1] = 2 with logits [0, 0, ln 2]: p = 2/4.
    logits = np.array([[[0.0, 0.0, math.log(2.0)], [0.0, 0.0, 0.0]]], dtype=np.float32)
    nll = token_nll(logits, np.array([[1, 2]]))
    assert nll[0, 0] == pytest.approx(-math.log(0.5), rel=1e-6)


def test_histogram_quantile_hand_computed() -> None:
    counts = np.zeros(metrics.HIST_NUM_BINS, dtype=np.int64)
    values = np.array([1e-3] * 50 + [1.0] * 49 + [100.0])
    counts += metrics.histogram_bins(values)
    # median lies among the 1e-3 values, p99 among the 1.0 values; upper bin edges are returned.
    assert_within_one_bin(histogram_quantile(counts, 0.5), 1e-3)
    assert_within_one_bin(histogram_quantile(counts, 0.99), 1.0)
    assert_within_one_bin(histogram_quantile(counts, 1.0), 100.0)
    assert math.isnan(histogram_quantile(np.zeros(metrics.HIST_NUM_BINS), 0.5))


def test_output_accumulator_matches_exact_stats_over_batches() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(6, 7, 33)).astype(np.float32)
    cand = (base + rng.normal(scale=0.05, size=base.shape)).astype(np.float32)
    acc = OutputErrorAccumulator()
    for start in range(0, 6, 2):  # three batches
        acc.update(base[start : start + 2], cand[start : start + 2])
    summary = acc.summary()
    exact = error_stats(base, cand)
    # Sums and maxima are exact up to float32 rounding of the differences.
    for key in ("abs_max", "abs_mean", "rel_max", "rel_mean"):
        assert summary[key] == pytest.approx(exact[key], rel=1e-5), key
    # Quantiles: within one histogram bin above the exact value.
    for key in ("abs_median", "abs_p99", "rel_median", "rel_p99"):
        assert_within_one_bin(summary[key], exact[key])
    # The accumulator's dot products are float32 per row (float64 here): ~1e-7 relative.
    assert summary["cosine"] == pytest.approx(cosine_similarity(base, cand), rel=1e-6)
    rows = row_cosine(base, cand)
    assert summary["row_cosine_mean"] == pytest.approx(rows.mean(), rel=1e-6)
    assert summary["row_cosine_min"] == pytest.approx(rows.min(), rel=1e-6)
    assert summary["elements"] == base.size
    hist = acc.histogram()
    assert sum(hist["counts"]) == base.size


def test_lm_accumulator_matches_direct_formulas() -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(size=(3, 8, 20)).astype(np.float32)
    cand = (base + rng.normal(scale=0.3, size=base.shape)).astype(np.float32)
    ids = rng.integers(0, 20, size=(3, 8))
    acc = LanguageModelAccumulator()
    acc.update(base[:1], cand[:1], ids[:1])
    acc.update(base[1:], cand[1:], ids[1:])
    summary = acc.summary()
    assert summary["top1_agreement"] == pytest.approx((base.argmax(-1) == cand.argmax(-1)).mean())
    assert summary["kl_mean"] == pytest.approx(kl_divergence(base, cand).mean(), rel=1e-9)

    def ppl(logits: np.ndarray) -> float:
        # Independent formula: softmax probabilities in float64, -log p of the next token.
        x = logits[:, :-1].astype(np.float64)
        p = np.exp(x - x.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        picked = np.take_along_axis(p, ids[:, 1:, None], axis=-1)
        return math.exp(-np.log(picked).mean())

    assert summary["ppl_baseline"] == pytest.approx(ppl(base), rel=1e-5)
    assert summary["ppl"] == pytest.approx(ppl(cand), rel=1e-5)
    assert summary["ppl_increase_pct"] == pytest.approx((ppl(cand) / ppl(base) - 1) * 100, rel=1e-4)
    assert summary["top5_agreement"] >= summary["top1_agreement"]


def test_lm_perplexity_matches_evaluate_perplexity_on_a_model() -> None:
    """The streaming perplexity and perplexity() both equal torch's cross-entropy (an independent reference)."""
    import torch

    from sq_trt.models.loading import load_model

    model = load_model("tiny:llama").model
    ids = torch.randint(0, 256, (3, 32), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        logits_t = model(input_ids=ids, use_cache=False).logits.float()
    logits = logits_t.numpy()
    reference = math.exp(
        float(torch.nn.functional.cross_entropy(logits_t[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)))
    )
    acc = LanguageModelAccumulator()
    acc.update(logits, logits, ids.numpy())
    # float32 log-softmax with a float64 normaliser vs torch's cross-entropy: agree to ~1e-6 relative.
    assert acc.summary()["ppl"] == pytest.approx(reference, rel=1e-5)
    assert perplexity(model, ids, progress=False) == pytest.approx(acc.summary()["ppl"], rel=1e-12)
    assert acc.summary()["kl_mean"] == 0.0
    assert acc.summary()["top1_agreement"] == 1.0
