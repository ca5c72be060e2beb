"""Accuracy metrics between a baseline's and a candidate's outputs (pure numpy).

Two layers:

* pure functions on arrays (:func:`error_stats`, :func:`cosine_similarity`,
  :func:`row_cosine`, :func:`kl_divergence`, :func:`topk_agreement`; the log-softmax
  and the token NLL are :mod:`sq_trt.runtime.perplexity`'s) that are exact and tested
  against hand-computed values;
* streaming accumulators (:class:`OutputErrorAccumulator`,
  :class:`LanguageModelAccumulator`) that fold one batch at a time, so a
  comparison over 16k tokens x 49k vocabulary never holds more than one batch of
  logits per runner. Sums and maxima are exact (float64 accumulation of float32
  differences); the median and p99 come from a log-like histogram whose bins are
  the top 16 bits of the float32 error (sign, exponent, 7 mantissa bits: 128
  bins per power of two): the upper edge of the bin holding the nearest-rank
  quantile, at most 2**-7 (0.8 %) above the exact value. Bit binning costs one
  shift and one ``bincount``, which matters at 25 M elements per batch.

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
  ``L`` tokens contributes ``L - 1`` predictions), summed by the same functions as
  :func:`sq_trt.runtime.perplexity.perplexity`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sq_trt.runtime.perplexity import label_nll_sum, log_softmax, next_token_labels, perplexity_from_nll

REL_EPS = 1e-6
# Histogram of non-negative float32 errors binned by their top 16 bits: bin i holds the
# values whose bit pattern >> 16 is i; the last bin (0x7F80) is +inf.
HIST_SHIFT = 16
HIST_NUM_BINS = (0x7F800000 >> HIST_SHIFT) + 1
HIST_RELATIVE_WIDTH = 2.0 ** -(23 - HIST_SHIFT)
_BLOCK_ELEMENTS = 1 << 20


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


def _cosine(dot: float, aa: float, bb: float) -> float:
    if aa == 0.0 and bb == 0.0:
        return 1.0
    if aa == 0.0 or bb == 0.0:
        return 0.0
    return dot / math.sqrt(aa * bb)


def _float32(block: np.ndarray) -> np.ndarray:
    """A block as contiguous float32 (no copy when it already is)."""
    return np.ascontiguousarray(block, dtype=np.float32)


def _check_same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if np.shape(a) != np.shape(b):
        raise ValueError(f"shape mismatch: {np.shape(a)} vs {np.shape(b)}")


def histogram_bins(values: np.ndarray) -> np.ndarray:
    """Counts of non-negative ``values`` per histogram bin (``HIST_NUM_BINS`` int64; NaN goes to the inf bin)."""
    v = np.ascontiguousarray(values, dtype=np.float32).ravel()
    index = np.minimum(v.view(np.int32) >> HIST_SHIFT, HIST_NUM_BINS - 1)
    return np.bincount(np.maximum(index, 0), minlength=HIST_NUM_BINS)


def histogram_edges() -> np.ndarray:
    """Exclusive upper edge of each bin (float64); the last bin's is +inf."""
    # Bin i ends where bin i + 1 starts; the inf bin (the last) ends at inf.
    bits = (np.arange(1, HIST_NUM_BINS, dtype=np.int64) << HIST_SHIFT).astype(np.int32)
    return np.append(bits.view(np.float32).astype(np.float64), np.inf)


def histogram_quantile(counts: np.ndarray, q: float) -> float:
    """The nearest-rank ``q`` quantile from histogram counts: the upper edge of the bin holding it."""
    total = int(counts.sum())
    if total == 0:
        return float("nan")
    rank = max(1, math.ceil(q * total))
    index = int(np.searchsorted(np.cumsum(counts), rank, side="left"))
    if index == 0:  # [0, 9e-41): zero for every purpose, and reported as such
        return 0.0
    return float(histogram_edges()[min(index, HIST_NUM_BINS - 1)])


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
        b = np.asarray(baseline)
        width = b.shape[-1] if b.ndim and b.shape[-1] else 1
        rows_b = b.reshape(-1, width)
        rows_c = np.asarray(candidate).reshape(rows_b.shape)
        # Blocks of ~1M elements, converted to float32 one block at a time: the temporaries stay
        # in cache, and a float16 batch is never copied whole (the conversion is exact either way).
        step = max(1, _BLOCK_ELEMENTS // width)
        for start in range(0, rows_b.shape[0], step):
            self._update_rows(_float32(rows_b[start : start + step]), _float32(rows_c[start : start + step]))

    def _update_rows(self, b: np.ndarray, c: np.ndarray) -> None:
        absolute = np.abs(c - b)
        relative = absolute / np.maximum(np.abs(b), np.float32(REL_EPS))
        self.count += absolute.size
        self.abs_sum += float(absolute.sum(dtype=np.float64))
        self.abs_max = max(self.abs_max, float(absolute.max(initial=0.0)))
        self.rel_sum += float(relative.sum(dtype=np.float64))
        self.rel_max = max(self.rel_max, float(relative.max(initial=0.0)))
        self.abs_hist += histogram_bins(absolute)
        self.rel_hist += histogram_bins(relative)
        # Row-wise float32 dot products (~1e-7 relative per row), totals in float64.
        dot = np.einsum("ij,ij->i", b, c).astype(np.float64)
        bb = np.einsum("ij,ij->i", b, b).astype(np.float64)
        cc = np.einsum("ij,ij->i", c, c).astype(np.float64)
        self.dot += float(dot.sum())
        self.base_sq += float(bb.sum())
        self.cand_sq += float(cc.sum())
        norms = np.sqrt(bb * cc)
        zero = norms == 0
        cos = np.where(zero, 1.0, dot / np.where(zero, 1.0, norms))
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
        fold_next_token_metrics(baseline_logits, [(self, candidate_logits)], input_ids)

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


def fold_next_token_metrics(
    baseline_logits: np.ndarray,
    candidates: Sequence[tuple[LanguageModelAccumulator, np.ndarray]],
    input_ids: np.ndarray,
) -> None:
    """Fold one batch into several candidates' accumulators, computing the baseline's side once.

    Works through blocks of ~1M logits (rows of positions), converted to
    float32 block by block, so the temporaries stay small; the baseline's log-probabilities, arg-max and NLL
    are computed once per block and shared by every candidate. Same definitions
    as :func:`kl_divergence`, :func:`topk_agreement` and :func:`sq_trt.runtime.perplexity.perplexity`.

    Args:
        baseline_logits: ``[batch, seq, vocab]``.
        candidates: ``(accumulator, candidate logits of the same shape)`` pairs.
        input_ids: ``[batch, seq]``; position ``t`` is scored on ``input_ids[:, t + 1]``.
    """
    base = np.asarray(baseline_logits)
    if base.ndim != 3 or np.shape(input_ids) != base.shape[:2]:
        raise ValueError(f"need logits [b, s, v] and ids [b, s], got {base.shape} and {np.shape(input_ids)}")
    vocab = base.shape[-1]
    rows_base = base.reshape(-1, vocab)
    # labels[b * seq + t] = ids[b, t + 1]; the last position of each sequence has none (-1).
    labels = next_token_labels(np.asarray(input_ids))
    rows_cands = []
    for acc, logits in candidates:
        _check_same_shape(base, logits)
        rows_cands.append((acc, np.asarray(logits).reshape(-1, vocab)))
    k = min(5, vocab)
    step = max(1, _BLOCK_ELEMENTS // vocab)
    for start in range(0, rows_base.shape[0], step):
        block = slice(start, start + step)
        base_block = _float32(rows_base[block])
        log_p = log_softmax(base_block)
        p = np.exp(log_p)
        target = base_block.argmax(axis=-1)
        block_labels = labels[block]
        nll_base, scored = label_nll_sum(log_p, block_labels)
        for acc, rows_cand in rows_cands:
            cand = _float32(rows_cand[block])
            log_q = log_softmax(cand)
            # Rounding can make the KL of identical distributions -1e-9; a divergence is never negative.
            kl = np.maximum((p * (log_p - log_q)).sum(axis=-1, dtype=np.float64), 0.0)
            acc.positions += kl.size
            acc.kl_sum += float(kl.sum())
            acc.kl_max = max(acc.kl_max, float(kl.max(initial=0.0)))
            target_score = cand[np.arange(cand.shape[0]), target]
            acc.top1 += int((target_score >= cand.max(axis=-1)).sum())
            kth = np.partition(cand, vocab - k, axis=-1)[:, vocab - k]
            acc.top5 += int((target_score >= kth).sum())
            acc.nll_baseline += nll_base
            acc.nll_candidate += label_nll_sum(log_q, block_labels)[0]
            acc.predictions += scored
