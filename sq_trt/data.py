"""Calibration and evaluation text, and deterministic tokenized chunks.

Sources:

* ``embedded`` (default): CPython's ``pydoc_data.topics``, about 465,000
  characters of English prose that ships with every Python, so the demo needs
  no downloads;
* local files: ``.txt``, ``.json``, ``.jsonl`` or ``.parquet`` (``text_column``
  names the field);
* a Hugging Face ``datasets`` dataset by hub name (``hub:<name>[:<config>][@<split>]``),
  when online.

Calibration and evaluation take disjoint character ranges of one source
(calibration the first ``calib_fraction``, evaluation the rest), and
:func:`check_disjoint` refuses chunks that appear in both.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from sq_trt.errors import DataError
from sq_trt.stage_config import StageConfig

if TYPE_CHECKING:
    import torch

EMBEDDED = "embedded"
_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".txt": "text"}


@dataclass(frozen=True)
class TextSlice:
    """A contiguous character range of a text source.

    Attributes:
        source: The source spec it came from (``"embedded"``, a path, ``"hub:..."``).
        role: ``"calibration"`` or ``"evaluation"``.
        start: First character (inclusive) in the source's full text.
        end: Last character (exclusive).
        text: The characters ``[start, end)``.
        source_hash: SHA-256 of the source's full text.
    """

    source: str
    role: Literal["calibration", "evaluation"]
    start: int
    end: int
    text: str
    source_hash: str

    @property
    def text_hash(self) -> str:
        """SHA-256 of this slice's text (recorded in manifests)."""
        return "sha256:" + hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def describe(self) -> dict[str, Any]:
        """JSON-friendly description for manifests and reports."""
        return {
            "source": self.source,
            "role": self.role,
            "chars": [self.start, self.end],
            "source_hash": self.source_hash,
            "text_hash": self.text_hash,
        }


def embedded_text() -> str:
    """The embedded default text: every ``pydoc_data.topics`` entry, in sorted key order."""
    from pydoc_data import topics

    return "\n\n".join(topics.topics[key] for key in sorted(topics.topics))


def _documents_from_dataset(dataset: Any, text_column: str, where: str) -> list[str]:
    if text_column not in dataset.column_names:
        raise DataError(
            f"{where} has no column {text_column!r}; its columns are {dataset.column_names}. "
            "Pass --text-column with one of them"
        )
    documents = []
    for index, value in enumerate(dataset[text_column]):
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            # Stringifying a number or a list would calibrate on "[1, 2]" and "0.5": refuse instead.
            raise DataError(
                f"{where}: column {text_column!r} holds a {type(value).__name__} in row {index} "
                f"({str(value)[:40]!r}); expected text. Pass --text-column naming a text field"
            )
        documents.append(value)
    return documents


def check_data_source(source: str, *, local_files_only: bool = False) -> None:
    """Check a ``--data`` value before any model is loaded (the cheap part of :func:`load_text`).

    Raises:
        DataError: A missing or unsupported file, or ``hub:`` data with ``local_files_only``.
    """
    if source == EMBEDDED:
        return
    if source.startswith("hub:"):
        if local_files_only:
            raise DataError(
                f"--data {source[:80]!r} would be fetched from the Hugging Face hub, but --local-files-only "
                "forbids downloads; save the dataset as a local .jsonl/.parquet file and pass its path"
            )
        return
    path = Path(source).expanduser()
    if not path.is_file():
        raise DataError(
            f"text source {source[:120]!r} is not a file; expected 'embedded', a .txt/.json/.jsonl/.parquet "
            "file, or 'hub:<dataset>[:<config>][@<split>]'"
        )
    if path.suffix.lower() not in _FILE_BUILDERS:
        raise DataError(f"text file {path} has suffix {path.suffix!r}; supported: {sorted(_FILE_BUILDERS)}")


def _read_text_file(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"text file {path} is not UTF-8 text (binary at byte {exc.start}); pass a UTF-8 .txt file"
        ) from exc
    if "\x00" in text:
        raise DataError(f"text file {path} contains NUL bytes: it is a binary file, not text")
    return text


def load_text(source: str = EMBEDDED, *, text_column: str = "text") -> str:
    """Load a text source as one string (documents joined by blank lines).

    Args:
        source: ``"embedded"``, a local file path, or ``"hub:<name>[:<config>][@<split>]"``.
        text_column: The field holding the text in json/jsonl/parquet/hub data.

    Returns:
        The full text of the source.

    Raises:
        DataError: Missing file, unknown format, missing column, or empty text.
    """
    if source == EMBEDDED:
        text = embedded_text()
    elif source.startswith("hub:"):
        text = _load_hub_text(source[4:], text_column)
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise DataError(
                f"text source {source!r} is not a file; expected 'embedded', a .txt/.json/.jsonl/.parquet "
                "file, or 'hub:<dataset>[:<config>][@<split>]'"
            )
        builder = _FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise DataError(
                f"text file {path} has suffix {path.suffix!r}; supported: {sorted(_FILE_BUILDERS)}"
            )
        if builder == "text":
            text = _read_text_file(path)
        else:
            import datasets

            # Its "Generating train split" bars would make every message after them multi-line noise,
            # and a file it cannot parse is also logged at ERROR before the exception this turns into
            # one line (printed or not depending on who configured `logging` first).
            datasets.disable_progress_bars()
            try:
                with _quiet_logger("datasets"):
                    dataset = datasets.load_dataset(builder, data_files=str(path), split="train")
            except Exception as exc:  # datasets raises many types for unreadable files
                message = " ".join(str(exc).split())[:200]
                raise DataError(f"could not read {path} as {builder}: {type(exc).__name__}: {message}") from exc
            text = "\n\n".join(_documents_from_dataset(dataset, text_column, str(path)))
    if not text.strip():
        raise DataError(f"text source {source!r} is empty; give calibration text with some content")
    return text


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Drop a library logger's records below CRITICAL while the caller turns its failure into a DataError."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _load_hub_text(spec: str, text_column: str) -> str:
    import datasets

    split = "train"
    if "@" in spec:
        spec, split = spec.rsplit("@", 1)
    name, _, config = spec.partition(":")
    try:
        dataset = datasets.load_dataset(name, config or None, split=split)
    except Exception as exc:  # network, missing dataset, missing split
        raise DataError(
            f"could not load dataset {name!r} (config {config or None!r}, split {split!r}) from the hub: {exc}. "
            "Offline? Save it as a local .jsonl/.parquet file and pass its path"
        ) from exc
    return "\n\n".join(_documents_from_dataset(dataset, text_column, f"dataset {name!r}"))


def split_calibration_evaluation(
    text: str, *, source: str = EMBEDDED, calib_fraction: float = 0.5
) -> tuple[TextSlice, TextSlice]:
    """Split a source into disjoint calibration and evaluation slices.

    Args:
        text: The full text of the source.
        source: Its spec (recorded in the slices).
        calib_fraction: Fraction of characters for calibration, in (0, 1).

    Returns:
        ``(calibration, evaluation)`` slices; calibration is the first part.
    """
    if not 0.0 < calib_fraction < 1.0:
        raise DataError(f"calib_fraction must be in (0, 1), got {calib_fraction}")
    source_hash = "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
    cut = int(len(text) * calib_fraction)
    # Cut at a paragraph boundary so no sentence straddles the two slices.
    boundary = text.rfind("\n\n", 0, cut)
    if boundary > 0:
        cut = boundary
    calib = TextSlice(source, "calibration", 0, cut, text[:cut], source_hash)
    evaluation = TextSlice(source, "evaluation", cut, len(text), text[cut:], source_hash)
    return calib, evaluation


def load_slices(
    source: str = EMBEDDED, *, text_column: str = "text", calib_fraction: float = 0.5
) -> tuple[TextSlice, TextSlice]:
    """Load a source and split it (see :func:`split_calibration_evaluation`)."""
    text = load_text(source, text_column=text_column)
    return split_calibration_evaluation(text, source=source, calib_fraction=calib_fraction)


def tokenize_chunks(
    tokenizer: Any, text_slice: TextSlice, *, seq_len: int, max_chunks: int | None = None
) -> torch.Tensor:
    """Tokenize a slice and cut it into non-overlapping chunks of ``seq_len`` tokens.

    Deterministic: the same slice, tokenizer and length give the same chunks.
    The tail shorter than ``seq_len`` is dropped.

    Args:
        tokenizer: A Hugging Face tokenizer.
        text_slice: The text to tokenize.
        seq_len: Tokens per chunk (>= 2).
        max_chunks: Keep at most this many chunks (the first ones).

    Returns:
        ``int64`` tensor ``[num_chunks, seq_len]``.

    Raises:
        DataError: When the slice yields no full chunk.
    """
    import torch

    if seq_len < 2:
        raise DataError(f"seq_len must be >= 2, got {seq_len}")
    if max_chunks is not None and max_chunks < 1:
        raise DataError(f"max_chunks must be >= 1, got {max_chunks}")
    ids = tokenizer(text_slice.text, add_special_tokens=False)["input_ids"]
    num_chunks = len(ids) // seq_len
    if max_chunks is not None:
        num_chunks = min(num_chunks, max_chunks)
    if num_chunks == 0:
        raise DataError(
            f"the {text_slice.role} text of {text_slice.source!r} has {len(ids)} tokens, fewer than one chunk "
            f"of seq_len={seq_len}; give more text or a shorter --seq-len"
        )
    return torch.tensor(ids[: num_chunks * seq_len], dtype=torch.long).reshape(num_chunks, seq_len)


def check_disjoint(calibration: torch.Tensor, evaluation: torch.Tensor) -> None:
    """Refuse evaluation chunks that also occur in the calibration chunks.

    Raises:
        DataError: When any evaluation row equals a calibration row.
    """
    seen = {bytes(row.numpy().tobytes()) for row in calibration}
    overlap = sum(bytes(row.numpy().tobytes()) in seen for row in evaluation)
    if overlap:
        raise DataError(
            f"{overlap} evaluation chunk(s) also appear in the calibration data; evaluation must be held out"
        )


def check_slices_disjoint(calibration: TextSlice, evaluation: TextSlice) -> None:
    """Refuse slices of the same source whose character ranges overlap."""
    if calibration.source_hash == evaluation.source_hash and (
        calibration.start < evaluation.end and evaluation.start < calibration.end
    ):
        raise DataError(
            f"calibration chars [{calibration.start}, {calibration.end}) overlap evaluation chars "
            f"[{evaluation.start}, {evaluation.end}) of {calibration.source!r}"
        )


class DataConfig(StageConfig):
    """Calibration and evaluation text (disjoint slices of one source).

    The pipeline recipe's ``data`` section and the ``--data``, ``--text-column`` and
    ``--calib-fraction`` flags of the commands that read text (calibrate, eval, compare).
    """

    source: str = Field(
        default=EMBEDDED,
        description="'embedded' (CPython's pydoc text), a .txt/.json/.jsonl/.parquet file, "
        "or 'hub:<dataset>[:<config>][@<split>]'",
        json_schema_extra={"cli": "--data", "dest": "data"},
    )
    text_column: str = Field(default="text", description="field holding the text in json/parquet/hub data")
    calib_fraction: float = Field(
        default=0.5,
        gt=0.0,
        lt=1.0,
        description="fraction of the text used for calibration; evaluation uses the rest",
    )
