"""Perplexity of a causal LM on tokenized chunks (the accuracy figure every stage reports)."""

from __future__ import annotations

import math
from typing import Any

from sq_trt.errors import DataError


def perplexity(model: Any, chunks: Any, *, batch_size: int = 4, progress: bool = True, desc: str = "perplexity") -> float:
    """Perplexity of ``model`` over non-overlapping token chunks.

    Every chunk is scored independently (no context carried across chunks):
    ``exp(mean over all predicted tokens of -log p(token | prefix))``, where each
    chunk of ``L`` tokens contributes ``L - 1`` predictions.

    Args:
        model: A causal LM returning ``.logits`` of ``[batch, seq, vocab]``.
        chunks: ``int64`` tensor ``[num_chunks, seq_len]``.
        batch_size: Chunks per forward pass.
        progress: Show a progress bar.
        desc: Progress bar label.

    Returns:
        The perplexity (finite for a finite model).
    """
    import torch
    from tqdm.auto import tqdm

    if chunks.dim() != 2 or chunks.shape[0] == 0 or chunks.shape[1] < 2:
        raise DataError(f"perplexity needs chunks of shape [n>=1, seq>=2], got {tuple(chunks.shape)}")
    device = next(model.parameters()).device
    total_nll = 0.0
    total_tokens = 0
    with torch.inference_mode():
        for start in tqdm(range(0, chunks.shape[0], batch_size), desc=desc, disable=not progress, unit="batch"):
            batch = chunks[start : start + batch_size].to(device)
            logits = model(input_ids=batch, use_cache=False).logits.float()
            nll = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum"
            )
            total_nll += float(nll)
            total_tokens += batch[:, 1:].numel()
    return math.exp(total_nll / total_tokens)
