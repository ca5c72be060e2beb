"""Perplexity and next-token NLL: the one definition the compare metrics, ``sq-trt eval`` and the tools use.

``exp(mean over all predicted tokens of -log p(token | prefix))``: every chunk (row of
``input_ids``) of ``L`` tokens contributes ``L - 1`` predictions, and no context is carried
across chunks. Log-probabilities are float32 with a float64 normaliser (:func:`log_softmax`),
and the NLL of the scored tokens is summed in float64 (:func:`label_nll_sum`); the compare
stage folds the same two functions batch by batch (:mod:`sq_trt.compare.metrics`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from sq_trt.errors import DataError


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable log-softmax over the last axis (float32 in, float32 out)."""
    x = np.asarray(logits, dtype=np.float32)
    shifted = x - x.max(axis=-1, keepdims=True)
    lse = np.log(np.exp(shifted).sum(axis=-1, keepdims=True, dtype=np.float64)).astype(np.float32)
    return shifted - lse


def next_token_labels(input_ids: np.ndarray) -> np.ndarray:
    """Flat ``[batch * seq]`` labels: position ``t`` is scored on ``ids[:, t + 1]``; the last has none (-1)."""
    ids = np.asarray(input_ids, dtype=np.int64)
    shifted = np.full(ids.shape, -1, dtype=np.int64)
    shifted[:, :-1] = ids[:, 1:]
    return shifted.ravel()


def label_nll_sum(log_probs: np.ndarray, labels: np.ndarray) -> tuple[float, int]:
    """``(sum of -log p(label), count)`` over the rows of ``log_probs`` whose label is not -1.

    Args:
        log_probs: ``[rows, vocab]`` log-probabilities (:func:`log_softmax`).
        labels: ``[rows]`` token ids, -1 where a row predicts nothing.
    """
    scored = np.flatnonzero(labels >= 0)
    return -float(log_probs[scored, labels[scored]].sum(dtype=np.float64)), int(scored.size)


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


def _logits_function(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    """``int64 [b, s]`` -> float32 ``[b, s, vocab]`` numpy logits, for a torch causal LM or a callable."""
    if not hasattr(model, "parameters"):
        return lambda ids: np.asarray(model(ids), dtype=np.float32)
    import torch

    device = next(model.parameters()).device

    def run(ids: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            batch = torch.from_numpy(ids).to(device)
            return np.asarray(model(input_ids=batch, use_cache=False).logits.float().cpu().numpy())

    return run


def perplexity(
    model: Any, chunks: Any, *, batch_size: int = 4, progress: bool = True, desc: str = "perplexity"
) -> float:
    """Perplexity of a causal LM over non-overlapping token chunks.

    Args:
        model: A torch causal LM returning ``.logits`` of ``[batch, seq, vocab]``, or any
            callable from int64 ids ``[batch, seq]`` to those logits (e.g.
            :meth:`sq_trt.runtime.onnx.OnnxModelRunner.run`).
        chunks: int64 ``[num_chunks, seq_len]`` (torch tensor or numpy array).
        batch_size: Chunks per forward pass.
        progress: Show a progress bar.
        desc: Progress bar label.

    Returns:
        The perplexity (finite for a finite model).

    Raises:
        DataError: ``chunks`` is not ``[n >= 1, seq >= 2]``.
    """
    from tqdm.auto import tqdm

    ids = np.asarray(chunks.numpy() if hasattr(chunks, "numpy") else chunks, dtype=np.int64)
    if ids.ndim != 2 or ids.shape[0] == 0 or ids.shape[1] < 2:
        raise DataError(f"perplexity needs chunks of shape [n>=1, seq>=2], got {tuple(ids.shape)}")
    logits_of = _logits_function(model)
    total_nll, total_tokens = 0.0, 0
    for start in tqdm(range(0, ids.shape[0], batch_size), desc=desc, disable=not progress, unit="batch"):
        batch = ids[start : start + batch_size]
        logits = logits_of(batch)
        nll, count = label_nll_sum(log_softmax(logits.reshape(-1, logits.shape[-1])), next_token_labels(batch))
        total_nll += nll
        total_tokens += count
    return perplexity_from_nll(total_nll, total_tokens)
