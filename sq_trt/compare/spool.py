"""The scratch store of one comparison: outputs on disk, so that one runner at a time is alive.

:func:`sq_trt.compare.run.run_comparison` runs the baseline over every batch
first, then each candidate in turn. Between the two, the baseline's outputs of
every batch wait here (one ``.npy`` per output, in the runner's own dtype, so
reading them back gives the very arrays the runner returned), and so do every
runner's outputs of the batches to be saved as Polygraphy ``RunResults`` JSON.
Those files are assembled at the end by :func:`write_run_results`, which
streams each array's base64 text from its ``.npy`` file: a saved iteration
never needs all runners' outputs in memory at once.

The spool lives in a temporary directory next to the compare artifact (the
output's file system, which the user chose for large files; ``/tmp`` may be a
RAM disk) and is removed when the comparison ends. It holds ``batches x
output bytes`` of the baseline (50 MB per 512-token batch of the demo's float16
logits) plus the saved iterations.
"""

from __future__ import annotations

import base64
import io
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Self

import numpy as np

# A multiple of 3 bytes: base64 of consecutive chunks concatenates to the base64 of the whole.
_B64_CHUNK = 3 * 2**20


@dataclass(frozen=True)
class SpooledResult:
    """One runner's outputs of one batch, on disk: ``(output name, .npy path)`` in output order."""

    runner: str
    runtime: float | None
    outputs: tuple[tuple[str, Path], ...]


class OutputSpool:
    """Outputs of the baseline (every batch) and of the saved batches (every runner), on disk."""

    def __init__(self, near: Path | None = None) -> None:
        """Create the scratch directory.

        Args:
            near: A directory whose parent holds the scratch directory (None: the system temp dir).
        """
        parent = near.parent if near is not None else None
        self.root = Path(tempfile.mkdtemp(prefix=".sq-trt-compare-spool-", dir=parent))
        self._baseline: list[tuple[tuple[str, Path], ...]] = []
        self._saved: dict[int, list[SpooledResult]] = {}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the scratch directory."""
        shutil.rmtree(self.root, ignore_errors=True)

    def _write(self, folder: str, outputs: Mapping[str, Any]) -> tuple[tuple[str, Path], ...]:
        directory = self.root / folder
        directory.mkdir(parents=True, exist_ok=True)
        files = []
        for position, (name, value) in enumerate(outputs.items()):
            path = directory / f"{position}.npy"
            np.save(path, np.asarray(value), allow_pickle=False)
            files.append((name, path))
        return tuple(files)

    def put_baseline(self, index: int, outputs: Mapping[str, Any]) -> SpooledResult:
        """Store the baseline's outputs of batch ``index`` (batches come in order)."""
        assert index == len(self._baseline), "baseline batches are spooled in order"
        files = self._write(f"baseline/{index}", outputs)
        self._baseline.append(files)
        return SpooledResult("", None, files)

    def baseline(self, index: int) -> OrderedDict[str, np.ndarray]:
        """The baseline's outputs of batch ``index``, memory-mapped (paged in as the metrics read them)."""
        return OrderedDict((name, np.load(path, mmap_mode="r")) for name, path in self._baseline[index])

    @property
    def batches(self) -> int:
        """How many baseline batches are stored."""
        return len(self._baseline)

    def put_saved(
        self,
        index: int,
        runner: str,
        runtime: float | None,
        outputs: Mapping[str, Any],
        *,
        reuse: SpooledResult | None = None,
    ) -> None:
        """Keep ``runner``'s outputs of batch ``index`` for the saved iteration (``reuse``: already spooled)."""
        files = (
            reuse.outputs
            if reuse is not None
            else self._write(f"saved/{index}/{len(self._saved.get(index, []))}", outputs)
        )
        self._saved.setdefault(index, []).append(SpooledResult(runner, runtime, files))

    def saved_iterations(self) -> list[int]:
        """Indices of the batches with saved outputs, in order."""
        return sorted(self._saved)

    def write_iteration(self, path: Path, index: int, order: Sequence[str]) -> None:
        """Write batch ``index``'s outputs as one Polygraphy ``RunResults`` JSON, runners in ``order``."""
        by_runner = {result.runner: result for result in self._saved[index]}
        write_run_results(path, [by_runner[name] for name in order if name in by_runner])


def _npy_base64(array: np.ndarray) -> str:
    """The base64 text Polygraphy's JSON encoder writes for ``array`` (``np.save``, no pickle)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return base64.b64encode(buffer.getvalue()).decode()


def _stream_base64(source: Path, sink: IO[str]) -> None:
    with source.open("rb") as handle:
        while chunk := handle.read(_B64_CHUNK):
            sink.write(base64.b64encode(chunk).decode())


def write_run_results(path: Path, results: Sequence[SpooledResult]) -> None:
    """Write spooled outputs as the JSON ``RunResults.save`` would, without loading the arrays.

    Polygraphy encodes the ``RunResults`` skeleton (runner names, runtimes,
    output names) with every array replaced by a distinct one-element sentinel;
    each sentinel's base64 text is then replaced, in the order the encoder wrote
    them, by the base64 of the spooled ``.npy`` file, streamed in chunks. The
    file is the one ``RunResults.save`` writes for the real arrays, byte for
    byte (tests check it), so ``RunResults.load`` and ``--load-results`` read it.

    Args:
        path: The JSON file to write (inside an artifact's temporary directory).
        results: One entry per runner, in the order the file lists them.
    """
    from polygraphy.comparator import IterationResult, RunResults

    skeleton = RunResults()
    sentinels: list[tuple[str, Path]] = []
    for result in results:
        outputs: OrderedDict[str, np.ndarray] = OrderedDict()
        for name, npy in result.outputs:
            sentinel = np.array([len(sentinels)], dtype=np.int64)
            outputs[name] = sentinel
            sentinels.append((_npy_base64(sentinel), npy))
        iteration = IterationResult(outputs=outputs, runtime=result.runtime, runner_name=result.runner)
        skeleton.append((result.runner, [iteration]))
    text = skeleton.to_json()
    with path.open("w") as sink:
        position = 0
        for token, npy in sentinels:
            at = text.find(f'"{token}"', position)
            assert at >= 0, "Polygraphy's JSON encoding of arrays changed; update write_run_results"
            sink.write(text[position : at + 1])
            _stream_base64(npy, sink)
            position = at + 1 + len(token)
        sink.write(text[position:])
