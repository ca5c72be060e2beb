"""Run the baseline and candidates with Polygraphy's ``Comparator`` and fold the metrics per batch.

``Comparator.run(..., streaming=True)`` activates every runner and yields one
single-iteration ``RunResults`` per feed, so at most one batch of outputs per
runner is alive at a time: the metrics of each candidate against the baseline
are folded in (:mod:`sq_trt.compare.metrics`) and the outputs dropped, except
the first ``save_iterations`` iterations, which are saved as Polygraphy JSON.

Saved iterations from an earlier run (``loaded``) replay their recorded
outputs; live runners given alongside them run on the recorded inputs, so a
TensorRT run saved on a GPU host can be compared against ONNX Runtime here.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sq_trt.compare.metrics import LanguageModelAccumulator, OutputErrorAccumulator, fold_next_token_metrics
from sq_trt.compare.results import load_iterations, save_iteration
from sq_trt.errors import ArtifactError, ConfigError

LOGITS = "logits"


class _RecordingLoader:
    """Feeds Polygraphy from ``(feed, recorded RunResults | None)`` pairs and remembers the current pair."""

    def __init__(self, source: Iterable[tuple[dict[str, Any], Any]], inner: Any = None) -> None:
        self._source = source
        self._inner = inner
        self.current: tuple[dict[str, Any], Any] | None = None

    @property
    def input_metadata(self) -> Any:
        return getattr(self._inner, "input_metadata", None)

    @input_metadata.setter
    def input_metadata(self, value: Any) -> None:
        if self._inner is not None:
            self._inner.input_metadata = value

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for feed, recorded in self._source:
            self.current = (feed, recorded)
            yield feed


def _live_pairs(loader: Any) -> Iterator[tuple[dict[str, Any], Any]]:
    for feed in loader:
        yield feed, None


@dataclass
class CandidateAccumulators:
    """Everything folded for one candidate."""

    outputs: dict[str, OutputErrorAccumulator] = field(default_factory=dict)
    lm: LanguageModelAccumulator | None = None


@dataclass
class ComparisonRun:
    """What :func:`run_comparison` measured."""

    baseline: str
    candidates: list[str]
    metrics: dict[str, dict[str, Any]]
    histograms: dict[str, dict[str, Any]]
    timing: dict[str, Any]
    iterations: int
    tokens: int
    saved_iterations: int

    def summaries(self) -> dict[str, dict[str, float]]:
        """Candidate -> flat metrics (the gate's input)."""
        return {name: self.metrics[name]["summary"] for name in self.candidates}


def run_comparison(
    runners: Sequence[Any],
    baseline: str,
    *,
    loader: Any = None,
    loaded: Path | None = None,
    save_dir: Path | None = None,
    save_iterations: int = 1,
    progress: bool = True,
) -> ComparisonRun:
    """Run (or replay) the runners and compare every candidate against the baseline.

    Args:
        runners: Live Polygraphy runners (may be empty when ``loaded`` is given).
        baseline: Name of the baseline runner (live or recorded).
        loader: Feed source for live runs (an :class:`~sq_trt.compare.dataloader.EvalDataLoader`);
            ignored when ``loaded`` is given, whose recorded inputs are used instead.
        loaded: A compare directory whose saved iterations to replay.
        save_dir: Where to save the first ``save_iterations`` iterations (None: save nothing).
        save_iterations: How many iterations to save; ``-1`` saves all.
        progress: Show a progress bar.

    Returns:
        The folded metrics, histograms and timings.

    Raises:
        ConfigError: The baseline or a candidate is missing, or outputs do not match.
    """
    from polygraphy.comparator import Comparator, RunResults
    from tqdm.auto import tqdm

    if loaded is None and loader is None:
        raise ConfigError("nothing to compare: give a data loader or saved results to load")
    if loaded is not None:
        recording = _RecordingLoader(load_iterations(loaded))
    else:
        recording = _RecordingLoader(_live_pairs(loader), inner=loader)

    if runners:
        stream: Iterable[Any] = Comparator.run(list(runners), data_loader=recording, streaming=True)
    else:
        # Replay only: iterating the loader sets `recording.current`; there is nothing live to run.
        stream = (None for _ in recording)

    accumulators: dict[str, CandidateAccumulators] = {}
    runtimes: dict[str, float] = {}
    metrics_seconds = 0.0
    iterations = tokens = 0
    total = len(loader) if loaded is None and hasattr(loader, "__len__") else None
    start = time.perf_counter()
    for single in tqdm(stream, total=total, desc="compare", unit="batch", disable=not progress):
        assert recording.current is not None
        feed, recorded = recording.current
        merged = _merge(RunResults, single, recorded)
        for name, iteration_results in merged.items():
            runtime = iteration_results[0].runtime
            runtimes[name] = runtimes.get(name, 0.0) + (float(runtime) if runtime is not None else 0.0)
        if save_dir is not None and (save_iterations < 0 or iterations < save_iterations):
            save_iteration(save_dir, iterations, feed, merged)
        tick = time.perf_counter()
        _fold(merged, baseline, np.asarray(feed["input_ids"]), accumulators)
        metrics_seconds += time.perf_counter() - tick
        iterations += 1
        tokens += int(np.asarray(feed["input_ids"]).size)
    wall = time.perf_counter() - start
    if iterations == 0:
        raise ConfigError("the data loader produced no batches; give more evaluation text or a smaller batch")

    metrics: dict[str, dict[str, Any]] = {}
    histograms: dict[str, dict[str, Any]] = {}
    for name, acc in accumulators.items():
        outputs = {out: a.summary() for out, a in acc.outputs.items()}
        lm = acc.lm.summary() if acc.lm is not None else None
        primary = LOGITS if LOGITS in outputs else next(iter(outputs))
        summary = {**outputs[primary], **(lm or {})}
        metrics[name] = {"outputs": outputs, "lm": lm, "primary_output": primary, "summary": summary}
        histograms[name] = {out: a.histogram() for out, a in acc.outputs.items()}
    timing = {
        "wall_s": wall,
        "metrics_s": metrics_seconds,
        "inference_s": runtimes,
        "replayed": loaded is not None,
    }
    return ComparisonRun(
        baseline=baseline,
        candidates=list(accumulators),
        metrics=metrics,
        histograms=histograms,
        timing=timing,
        iterations=iterations,
        tokens=tokens,
        saved_iterations=iterations
        if save_iterations < 0
        else min(iterations, save_iterations)
        if save_dir
        else 0,
    )


def _merge(run_results_cls: Any, live: Any, recorded: Any) -> Any:
    merged = run_results_cls()
    for source in (recorded, live):
        if source is None:
            continue
        for name, iteration_results in source.items():
            if name in merged:
                raise ConfigError(
                    f"runner name {name!r} is both in the loaded results and among the live runners; "
                    "give the live runner another name"
                )
            merged.append((name, iteration_results))
    return merged


def _fold(
    merged: Any, baseline: str, input_ids: np.ndarray, accumulators: dict[str, CandidateAccumulators]
) -> None:
    names = list(merged.keys())
    if baseline not in names:
        raise ConfigError(f"baseline {baseline!r} is not among the runners {names}")
    base_outputs = dict(merged[baseline][0].items())
    next_token: list[tuple[LanguageModelAccumulator, np.ndarray]] = []
    for name in names:
        if name == baseline:
            continue
        cand_outputs = dict(merged[name][0].items())
        acc = accumulators.setdefault(name, CandidateAccumulators())
        for out, base in base_outputs.items():
            if out not in cand_outputs:
                raise ArtifactError(
                    f"candidate {name!r} has no output {out!r} (it has {sorted(cand_outputs)}); "
                    "baseline and candidate must be exports of the same model"
                )
            cand = cand_outputs[out]
            if np.shape(cand) != np.shape(base):
                raise ArtifactError(
                    f"output {out!r}: candidate {name!r} has shape {np.shape(cand)}, baseline {np.shape(base)}; "
                    "they were not run on the same inputs"
                )
            acc.outputs.setdefault(out, OutputErrorAccumulator()).update(base, cand)
        if LOGITS in base_outputs and np.ndim(base_outputs[LOGITS]) == 3:
            if acc.lm is None:
                acc.lm = LanguageModelAccumulator()
            next_token.append((acc.lm, cand_outputs[LOGITS]))
    if next_token:
        # The baseline's log-probabilities are computed once for all candidates.
        fold_next_token_metrics(base_outputs[LOGITS], next_token, input_ids)
