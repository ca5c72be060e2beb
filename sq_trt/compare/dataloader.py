"""Held-out evaluation text as Polygraphy feed dicts in the engine's input shapes.

The text is the evaluation slice of :func:`sq_trt.data.load_slices` (never the
calibration slice), tokenized once and cut into ``[batch, seq_len]`` feeds.
Polygraphy's ``Comparator`` sets :attr:`EvalDataLoader.input_metadata` from
the first runner before iterating; a fixed (non-dynamic) dimension there wins
over the requested batch or sequence length, and is reported, so an engine
built for one static shape is fed exactly that shape.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import numpy as np

from sq_trt.data import TextSlice, load_slices, tokenize_chunks
from sq_trt.errors import DataError


def load_tokenizer(model_source: str) -> Any:
    """The tokenizer of ``--model`` without loading weights where possible.

    Args:
        model_source: ``demo``, ``tiny:<family>``, a model directory or a hub id.
    """
    if model_source.startswith("tiny:"):
        from sq_trt.models.tiny import byte_tokenizer

        return byte_tokenizer()
    from sq_trt.models.loading import load_model

    if model_source.endswith(".gguf"):
        return load_model(model_source).tokenizer
    import transformers

    where = model_source
    if model_source == "demo":
        from sq_trt.models.demo import demo_model_dir

        where = str(demo_model_dir())
    return transformers.AutoTokenizer.from_pretrained(where)


def evaluation_slice(
    data: str = "embedded", *, text_column: str = "text", calib_fraction: float = 0.5
) -> TextSlice:
    """The held-out evaluation slice of a text source."""
    return load_slices(data, text_column=text_column, calib_fraction=calib_fraction)[1]


class EvalDataLoader:
    """Iterable of feed dicts ``{"input_ids": int64 [batch, seq]}`` over held-out chunks.

    Extra inputs an encoder export may declare get neutral values:
    ``attention_mask`` ones, ``token_type_ids`` / ``position_ids`` in their usual form.
    """

    def __init__(self, chunks: np.ndarray, *, batch_size: int = 1) -> None:
        """Args:
        chunks: int64 ``[num_chunks, seq_len]`` token ids.
        batch_size: Chunks per feed.
        """
        if chunks.ndim != 2 or chunks.shape[0] == 0:
            raise DataError(f"evaluation chunks must be [n>=1, seq], got {chunks.shape}")
        if batch_size < 1:
            raise DataError(f"batch size must be >= 1, got {batch_size}")
        self.chunks = np.ascontiguousarray(chunks, dtype=np.int64)
        self.batch_size = batch_size
        self.input_metadata: Any = None

    @classmethod
    def from_text(
        cls, tokenizer: Any, text_slice: TextSlice, *, seq_len: int, max_chunks: int | None, batch_size: int
    ) -> EvalDataLoader:
        """Tokenize a slice into chunks (see :func:`sq_trt.data.tokenize_chunks`)."""
        if text_slice.role != "evaluation":
            raise DataError(f"compare needs the held-out evaluation slice, got the {text_slice.role} slice")
        chunks = tokenize_chunks(tokenizer, text_slice, seq_len=seq_len, max_chunks=max_chunks)
        return cls(chunks.numpy(), batch_size=batch_size)

    def __len__(self) -> int:
        batch = self._batch()
        return (self.chunks.shape[0] + batch - 1) // batch

    def _batch(self) -> int:
        fixed = self._fixed_dim(0)
        return fixed if fixed is not None else self.batch_size

    def _fixed_dim(self, axis: int) -> int | None:
        if self.input_metadata is None or "input_ids" not in self.input_metadata:
            return None
        shape = self.input_metadata["input_ids"].shape
        if shape is None or len(shape) <= axis:
            return None
        dim = shape[axis]
        return dim if isinstance(dim, int) and dim > 0 else None

    def __iter__(self) -> Iterator[OrderedDict[str, np.ndarray]]:
        seq = self._fixed_dim(1)
        if seq is not None and seq != self.chunks.shape[1]:
            raise DataError(
                f"the engine's input_ids has a fixed sequence length {seq}, but the chunks have "
                f"{self.chunks.shape[1]} tokens; pass --seq-len {seq}"
            )
        batch = self._batch()
        usable = (
            self.chunks.shape[0] - self.chunks.shape[0] % batch
            if self._fixed_dim(0)
            else self.chunks.shape[0]
        )
        for start in range(0, usable, batch):
            ids = self.chunks[start : start + batch]
            yield self._feed(ids)

    def _feed(self, ids: np.ndarray) -> OrderedDict[str, np.ndarray]:
        feed: OrderedDict[str, np.ndarray] = OrderedDict(input_ids=ids)
        names = list(self.input_metadata.keys()) if self.input_metadata is not None else []
        if "attention_mask" in names:
            feed["attention_mask"] = np.ones_like(ids)
        if "token_type_ids" in names:
            feed["token_type_ids"] = np.zeros_like(ids)
        if "position_ids" in names:
            feed["position_ids"] = np.broadcast_to(np.arange(ids.shape[1], dtype=np.int64), ids.shape).copy()
        return feed
