"""Accuracy metrics between a baseline's and a candidate's outputs (pure numpy).

Two layers:

* pure functions on arrays (:func:`error_stats`, :func:`cosine_similarity`,
  :func:`row_cosine`, :func:`log_softmax`, :func:`kl_divergence`,
  :func:`topk_agreement`, :func:`token_nll`) that are exact and tested against
  hand-computed values;
* streaming accumulators (:class:`OutputErrorAccumulator`,
  :class:`LanguageModelAccumulator`) that fold one batch at a time, so a
  comparison over 16k tokens x 49k vocabulary never holds more than one batch of
  logits per runner. Sums, maxima and cosine terms stay exact (float64); the
  median and p99 come from a log-spaced histogram (200 bins per decade): the
  upper edge of the bin holding the nearest-rank quantile, so at most one bin
  (1.2 %) above the exact value.

Quantiles are nearest-rank (numpy's ``inverted_cdf``: the smallest value with at
least ``q`` of the elements at or below it) in both layers, so the exact and the
streamed figures estimate the same number.

Definitions (every "error" is candidate minus baseline):

* absolute error ``|c - b|``; relative error ``|c - b| / max(|b|, REL_EPS)``
  (``REL_EPS`` keeps near-zero baseline values from producing inf);
* cosine similarity of the flattened outputs, and per row (last axis, e.g. one
  token's embedding or logit vector);
* top-1 agreement: the candidate's arg-max token equals the baseline's;
  top-5 agreement: the baseline's arg-max token is among the candidate's 5
  highest logits (what a sampler with top-k=5 could still pick);
* KL divergence ``KL(P_baseline || P_candidate)`` of the next-token
  distributions, in nats, averaged over positions;
* perplexity ``exp(mean NLL)`` of the input ids shifted by one (each sequence of
  ``L`` tokens contributes ``L - 1`` predictions), the same definition as
  :func:`sq_trt.evaluate.perplexity`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

REL_EPS = 1e-6
# Log-spaced histogram of errors: 200 bins per decade over [1e-12, 1e6); values
# below land in bin 0 ("zero"), values above in the last bin.
HIST_LOW_EXP = -12
HIST_HIGH_EXP = 6
HIST_BINS_PER_DECADE = 200
HIST_NUM_BINS = (HIST_HIGH_EXP - HIST_LOW_EXP) * HIST_BINS_PER_DECADE + 2


def error_stats(baseline: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Exact absolute and relative error statistics of two arrays of the same shape.

    Args:
        baseline: Reference values.
        candidate: Values to judge.

    Returns:
        ``abs_max, abs_mean, abs_median, abs_p99, rel_max, rel_mean, rel_median, rel_p99``.
    """
    _check_same_shape(baseline, candidate)
    b = np.asarray(baseline, dtype=np.float64)
    absolute = np.abs(np.asarray(candidate, dtype=np.float64) - b)
    relative = absolute / np.maximum(np.abs(b), REL_EPS)
    stats: dict[str, float] = {}
    for prefix, values in (("abs", absolute), ("rel", relative)):
        stats[f"{prefix}_max"] = float(values.max())
        stats[f"{prefix}_mean"] = float(values.mean())
        stats[f"{prefix}_median"] = float(np.quantile(values, 0.5, method="inverted_cdf"))
        stats[f"{prefix}_p99"] = float(np.quantile(values, 0.99, method="inverted_cdf"))
    return stats


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of the flattened arrays (1.0 when both are all zeros)."""
    _check_same_shape(a, b)
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    return _cosine(float(x @ y), float(x @ x), float(y @ y))


def row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row (last axis); ``[...]`` of float64."""
    _check_same_shape(a, b)
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    dot = (x * y).sum(-1)
    norms = np.sqrt((x * x).sum(-1) * (y * y).sum(-1))
    both_zero = norms == 0
    return np.where(both_zero, 1.0, dot / np.where(both_zero, 1.0, norms))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable log-softmax over the last axis (float32 in, float32 out)."""
    x = np.asarray(logits, dtype=np.float32)
    shifted = x - x.max(axis=-1, keepdims=True)
    lse = np.log(np.exp(shifted).sum(axis=-1, keepdims=True, dtype=np.float64)).astype(np.float32)
    return shifted - lse


def kl_divergence(baseline_logits: np.ndarray, candidate_logits: np.ndarray) -> np.ndarray:
    """``KL(softmax(baseline) || softmax(candidate))`` per row, in nats (float64 ``[...]``)."""
    _check_same_shape(baseline_logits, candidate_logits)
    log_p = log_softmax(baseline_logits)
    log_q = log_softmax(candidate_logits)
    kl = (np.exp(log_p) * (log_p - log_q)).sum(axis=-1, dtype=np.float64)
    # Rounding can make a KL of identical distributions -1e-9; a divergence is never negative.
    return np.maximum(kl, 0.0)


def topk_agreement(baseline_logits: np.ndarray, candidate_logits: np.ndarray, k: int) -> np.ndarray:
    """Per row: is the baseline's arg-max among the candidate's ``k`` largest logits (bool ``[...]``).

    ``k = 1`` is plain arg-max agreement. Ties count as agreement (the
    baseline's top token scores at least the candidate's k-th value).
    """
    _check_same_shape(baseline_logits, candidate_logits)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    cand = np.asarray(candidate_logits)
    target = np.asarray(baseline_logits).argmax(axis=-1)
    target_score = np.take_along_axis(cand, target[..., None], axis=-1)[..., 0]
    vocab = cand.shape[-1]
    kth = np.partition(cand, vocab - min(k, vocab), axis=-1)[..., vocab - min(k, vocab)]
    return target_score >= kth


def token_nll(logits: np.ndarray, input_ids: np.ndarray) -> np.ndarray:
    """Negative log-likelihood of each next token: ``-log p(ids[:, t+1] | logits[:, t])``.

    Args:
        logits: ``[batch, seq, vocab]``.
        input_ids: ``[batch, seq]``; the labels are the ids shifted by one.

    Returns:
        float64 ``[batch, seq - 1]``.
    """
    if logits.ndim != 3 or input_ids.shape != logits.shape[:2]:
        raise ValueError(f"need logits [b, s, v] and ids [b, s], got {logits.shape} and {input_ids.shape}")
    log_p = log_softmax(logits[:, :-1])
    labels = np.asarray(input_ids)[:, 1:, None].astype(np.int64)
    return -np.take_along_axis(log_p, labels, axis=-1)[..., 0].astype(np.float64)


def perplexity_from_nll(nll_sum: float, count: int) -> float:
    """``exp(nll_sum / count)``."""
    if count <= 0:
        raise ValueError("perplexity needs at least one predicted token")
    return math.exp(nll_sum / count)


def _cosine(dot: float, aa: float, bb: float) -> float:
    if aa == 0.0 and bb == 0.0:
        return 1.0
    if aa == 0.0 or bb == 0.0:
        return 0.0
    return dot / math.sqrt(aa * bb)


def _check_same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if np.shape(a) != np.shape(b):
        raise ValueError(f"shape mismatch: {np.shape(a)} vs {np.shape(b)}")


def histogram_bins(values: np.ndarray) -> np.ndarray:
    """Counts of non-negative ``values`` in the log-spaced error histogram (``HIST_NUM_BINS``)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    with np.errstate(divide="ignore"):
        position = (np.log10(np.maximum(v, 1e-300)) - HIST_LOW_EXP) * HIST_BINS_PER_DECADE
    index = np.clip(np.floor(position).astype(np.int64) + 1, 0, HIST_NUM_BINS - 1)
    return np.bincount(index, minlength=HIST_NUM_BINS)


def histogram_edges() -> np.ndarray:
    """Upper edge of each histogram bin (bin 0: below 1e-12; last bin: up to +inf)."""
    inner = 10.0 ** (HIST_LOW_EXP + np.arange(1, HIST_NUM_BINS - 1) / HIST_BINS_PER_DECADE)
    return np.concatenate([[10.0**HIST_LOW_EXP], inner, [np.inf]])


def histogram_quantile(counts: np.ndarray, q: float) -> float:
    """The ``q`` quantile from histogram counts: the upper edge of the bin holding it (conservative)."""
    total = int(counts.sum())
    if total == 0:
        return float("nan")
    cumulative = np.cumsum(counts)
    index = int(np.searchsorted(cumulative, q * total, side="left"))
    edges = histogram_edges()
    return float(edges[min(index, len(edges) - 1)])


@dataclass
class OutputErrorAccumulator:
    """Streams error statistics of one output over batches (see module docstring)."""

    count: int = 0
    rows: int = 0
    abs_sum: float = 0.0
    abs_max: float = 0.0
    rel_sum: float = 0.0
    rel_max: float = 0.0
    dot: float = 0.0
    base_sq: float = 0.0
    cand_sq: float = 0.0
    row_cos_sum: float = 0.0
    row_cos_min: float = 1.0
    abs_hist: np.ndarray = field(default_factory=lambda: np.zeros(HIST_NUM_BINS, dtype=np.int64))
    rel_hist: np.ndarray = field(default_factory=lambda: np.zeros(HIST_NUM_BINS, dtype=np.int64))

    def update(self, baseline: np.ndarray, candidate: np.ndarray) -> None:
        """Fold one batch in (arrays of the same shape)."""
        _check_same_shape(baseline, candidate)
        b = np.asarray(baseline, dtype=np.float32)
        c = np.asarray(candidate, dtype=np.float32)
        absolute = np.abs(c - b)
        relative = absolute / np.maximum(np.abs(b), np.float32(REL_EPS))
        self.count += absolute.size
        self.abs_sum += float(absolute.sum(dtype=np.float64))
        self.abs_max = max(self.abs_max, float(absolute.max(initial=0.0)))
        self.rel_sum += float(relative.sum(dtype=np.float64))
        self.rel_max = max(self.rel_max, float(relative.max(initial=0.0)))
        self.abs_hist += histogram_bins(absolute)
        self.rel_hist += histogram_bins(relative)
        self.dot += float(np.dot(b.ravel().astype(np.float64), c.ravel().astype(np.float64)))
        self.base_sq += float(np.dot(b.ravel().astype(np.float64), b.ravel().astype(np.float64)))
        self.cand_sq += float(np.dot(c.ravel().astype(np.float64), c.ravel().astype(np.float64)))
        if b.ndim >= 1 and b.shape[-1] > 0:
            cos = row_cosine(b, c).ravel()
            self.rows += cos.size
            self.row_cos_sum += float(cos.sum())
            self.row_cos_min = min(self.row_cos_min, float(cos.min(initial=1.0)))

    def summary(self) -> dict[str, float]:
        """The aggregated statistics (JSON-friendly floats)."""
        if self.count == 0:
            raise ValueError("no batches were accumulated")
        return {
            "abs_max": self.abs_max,
            "abs_mean": self.abs_sum / self.count,
            "abs_median": histogram_quantile(self.abs_hist, 0.5),
            "abs_p99": histogram_quantile(self.abs_hist, 0.99),
            "rel_max": self.rel_max,
            "rel_mean": self.rel_sum / self.count,
            "rel_median": histogram_quantile(self.rel_hist, 0.5),
            "rel_p99": histogram_quantile(self.rel_hist, 0.99),
            "cosine": _cosine(self.dot, self.base_sq, self.cand_sq),
            "row_cosine_mean": self.row_cos_sum / self.rows if self.rows else 1.0,
            "row_cosine_min": self.row_cos_min,
            "elements": float(self.count),
        }

    def histogram(self) -> dict[str, Any]:
        """Non-empty bins of the absolute-error histogram, for plots: ``{"upper_edges", "counts"}``."""
        nonzero = np.flatnonzero(self.abs_hist)
        edges = histogram_edges()
        return {
            "upper_edges": [float(edges[i]) for i in nonzero],
            "counts": [int(self.abs_hist[i]) for i in nonzero],
        }


@dataclass
class LanguageModelAccumulator:
    """Streams next-token metrics of a candidate LM against the baseline LM."""

    positions: int = 0
    top1: int = 0
    top5: int = 0
    kl_sum: float = 0.0
    kl_max: float = 0.0
    predictions: int = 0
    nll_baseline: float = 0.0
    nll_candidate: float = 0.0

    def update(
        self, baseline_logits: np.ndarray, candidate_logits: np.ndarray, input_ids: np.ndarray
    ) -> None:
        """Fold one batch: logits ``[batch, seq, vocab]`` and the input ids ``[batch, seq]``."""
        kl = kl_divergence(baseline_logits, candidate_logits)
        self.positions += kl.size
        self.kl_sum += float(kl.sum())
        self.kl_max = max(self.kl_max, float(kl.max(initial=0.0)))
        self.top1 += int(topk_agreement(baseline_logits, candidate_logits, 1).sum())
        self.top5 += int(topk_agreement(baseline_logits, candidate_logits, 5).sum())
        if input_ids.shape[-1] >= 2:
            self.nll_baseline += float(token_nll(baseline_logits, input_ids).sum())
            self.nll_candidate += float(token_nll(candidate_logits, input_ids).sum())
            self.predictions += input_ids.shape[0] * (input_ids.shape[1] - 1)

    def summary(self) -> dict[str, float]:
        """``top1_agreement, top5_agreement, kl_mean, kl_max, ppl_baseline, ppl, ppl_increase_pct``."""
        if self.positions == 0:
            raise ValueError("no batches were accumulated")
        result = {
            "top1_agreement": self.top1 / self.positions,
            "top5_agreement": self.top5 / self.positions,
            "kl_mean": self.kl_sum / self.positions,
            "kl_max": self.kl_max,
            "positions": float(self.positions),
        }
        if self.predictions:
            ppl_base = perplexity_from_nll(self.nll_baseline, self.predictions)
            ppl = perplexity_from_nll(self.nll_candidate, self.predictions)
            result.update(ppl_baseline=ppl_base, ppl=ppl, ppl_increase_pct=(ppl / ppl_base - 1.0) * 100.0)
        return result
