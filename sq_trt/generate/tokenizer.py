"""Finding the tokenizer of a generation graph or engine: saved next to it, or loaded from the model source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sq_trt.errors import ModelLoadError

TOKENIZER_DIR = "tokenizer"


def load_tokenizer(directory: str | Path | None = None, *, source: str | None = None) -> Any:
    """The tokenizer saved in ``directory/tokenizer`` (by ``export --with-past``), else that of ``source``.

    Args:
        directory: An export or engine directory.
        source: A ``--model`` value (``tiny:<family>``, ``demo``, a directory or hub id).

    Raises:
        ModelLoadError: Neither gives a tokenizer.
    """
    from transformers import AutoTokenizer

    if directory is not None and (Path(directory) / TOKENIZER_DIR).is_dir():
        return AutoTokenizer.from_pretrained(str(Path(directory) / TOKENIZER_DIR))
    if source is not None and source.startswith("tiny:"):
        from sq_trt.models.tiny import byte_tokenizer

        return byte_tokenizer()
    if source == "demo":
        from sq_trt.models.demo import demo_model_dir

        return AutoTokenizer.from_pretrained(str(demo_model_dir()))
    if source:
        try:
            return AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"could not load the tokenizer of {source!r}: {exc}") from exc
    raise ModelLoadError(
        f"no tokenizer: {directory}/{TOKENIZER_DIR} does not exist and no model source was given; "
        "pass --tokenizer MODEL (the --model the graph was exported from)"
    )
