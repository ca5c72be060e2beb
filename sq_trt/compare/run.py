"""Run the baseline and the candidates with Polygraphy's ``Comparator``, one runner at a time.

Memory is one runner's, whatever the number of candidates. The baseline runs
first over every batch (``Comparator.run([baseline], streaming=True)``); its
outputs go to a scratch spool on disk (:mod:`sq_trt.compare.spool`). Then each
candidate runs alone over the same feeds, its metrics folded batch by batch
against the spooled baseline (:mod:`sq_trt.compare.metrics`), and its session
is closed before the next one opens. Alive at any time: one session, one batch
of the candidate's outputs, the baseline's batch (memory-mapped) and the metric
blocks. Each candidate's accumulators see the same arrays in the same order as
when every runner ran per batch, so the metrics are the same numbers, bit for bit.

The first ``save_iterations`` batches are saved as Polygraphy JSON: every
runner's outputs of such a batch are spooled as they come and written into one
``RunResults`` file at the end, streamed from disk.

Saved iterations from an earlier run (``loaded``) replay their recorded
outputs in the baseline's pass; live runners given alongside them run on the
recorded inputs, so a TensorRT run saved on a GPU host can be compared against
ONNX Runtime here.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sq_trt.artifacts.comparison import iteration_paths, load_iterations, save_iteration_inputs
from sq_trt.compare.metrics import LanguageModelAccumulator, OutputErrorAccumulator
from sq_trt.compare.spool import OutputSpool, SpooledResult
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
    """Run (or replay) the runners, one at a time, and compare every candidate against the baseline.

    Args:
        runners: Live Polygraphy runners (may be empty when ``loaded`` is given).
        baseline: Name of the baseline runner (live or recorded).
        loader: Feed source for live runs (an :class:`~sq_trt.compare.dataloader.EvalDataLoader`);
            ignored when ``loaded`` is given, whose recorded inputs are used instead.
        loaded: A compare directory whose saved iterations to replay.
        save_dir: Where to save the first ``save_iterations`` iterations (None: save nothing); the
            scratch spool is created next to it.
        save_iterations: How many iterations to save; ``-1`` saves all.
        progress: Show a progress bar.

    Returns:
        The folded metrics, histograms and timings.

    Raises:
        ConfigError: The baseline or a candidate is missing, or outputs do not match.
    """
    from tqdm.auto import tqdm

    if loaded is None and loader is None:
        raise ConfigError("nothing to compare: give a data loader or saved results to load")
    live_names = [runner.name for runner in runners]
    if loaded is None and baseline not in live_names:
        raise ConfigError(f"baseline {baseline!r} is not among the runners {live_names}")
    base_runner = next((runner for runner in runners if runner.name == baseline), None)
    total = len(loader) * len(runners) if loaded is None and hasattr(loader, "__len__") else None
    start = time.perf_counter()
    with (
        OutputSpool(save_dir) as spool,
        tqdm(total=total, desc="compare", unit="batch", disable=not progress) as bar,
    ):
        state = _FoldState(baseline, spool, save_dir, save_iterations, on_batch=bar.update)
        feeds = _baseline_pass(base_runner, live_names, loader, loaded, state)
        if not feeds:
            raise ConfigError(
                "the data loader produced no batches; give more evaluation text or a smaller batch"
            )
        for runner in runners:
            if runner is not base_runner:
                _candidate_pass(runner, feeds, state)
        if save_dir is not None:
            for index in spool.saved_iterations():
                spool.write_iteration(iteration_paths(save_dir, index)[0], index, live_names)
    wall = time.perf_counter() - start
    iterations = len(feeds)
    metrics, histograms = _summaries(state.accumulators)
    timing = {
        "wall_s": wall,
        "metrics_s": state.metrics_seconds,
        "inference_s": state.runtimes,
        "replayed": loaded is not None,
    }
    return ComparisonRun(
        baseline=baseline,
        candidates=list(state.accumulators),
        metrics=metrics,
        histograms=histograms,
        timing=timing,
        iterations=iterations,
        tokens=sum(int(np.asarray(feed["input_ids"]).size) for feed in feeds),
        saved_iterations=iterations
        if save_iterations < 0
        else min(iterations, save_iterations)
        if save_dir
        else 0,
    )


@dataclass
class _FoldState:
    """What the passes over the runners share: the spool, the accumulators, the time spent."""

    baseline: str
    spool: OutputSpool
    save_dir: Path | None
    save_iterations: int
    on_batch: Callable[[int], Any]
    accumulators: dict[str, CandidateAccumulators] = field(default_factory=dict)
    runtimes: dict[str, float] = field(default_factory=dict)
    metrics_seconds: float = 0.0

    def saves(self, index: int) -> bool:
        """Whether batch ``index`` is one of the saved iterations."""
        return self.save_dir is not None and (self.save_iterations < 0 or index < self.save_iterations)

    def add(
        self,
        name: str,
        index: int,
        result: Any,
        base_outputs: Mapping[str, Any],
        input_ids: np.ndarray,
        spooled: SpooledResult | None = None,
    ) -> None:
        """Take one runner's ``IterationResult`` of batch ``index``: its time, saved outputs, metrics."""
        runtime = result.runtime
        self.runtimes[name] = self.runtimes.get(name, 0.0) + (float(runtime) if runtime is not None else 0.0)
        if self.saves(index):
            self.spool.put_saved(index, name, runtime, dict(result.items()), reuse=spooled)
        if name != self.baseline:
            tick = time.perf_counter()
            accumulators = self.accumulators.setdefault(name, CandidateAccumulators())
            _fold_candidate(name, base_outputs, dict(result.items()), input_ids, accumulators)
            self.metrics_seconds += time.perf_counter() - tick
        self.on_batch(1)


def _baseline_pass(
    base_runner: Any, live_names: list[str], loader: Any, loaded: Path | None, state: _FoldState
) -> list[dict[str, Any]]:
    """Run the live baseline (or replay the recorded one) over every batch; returns the feeds.

    The baseline's outputs are spooled for the candidates; recorded candidates are folded here.
    """
    from polygraphy.comparator import Comparator

    if loaded is not None:
        recording = _RecordingLoader(load_iterations(loaded))
    else:
        recording = _RecordingLoader(_live_pairs(loader), inner=loader)
    stream: Iterable[Any]
    if base_runner is not None:
        stream = Comparator.run([base_runner], data_loader=recording, streaming=True)
    else:
        # Replay only: iterating the loader sets `recording.current`; there is nothing live to run.
        stream = (None for _ in recording)
    feeds: list[dict[str, Any]] = []
    for index, single in enumerate(stream):
        assert recording.current is not None
        feed, recorded = recording.current
        results = _iteration_results(single, recorded, live_names)
        if state.baseline not in results:
            raise ConfigError(f"baseline {state.baseline!r} is not among the runners {list(results)}")
        base_outputs = OrderedDict(results[state.baseline].items())
        spooled = state.spool.put_baseline(index, base_outputs)
        if state.saves(index):
            assert state.save_dir is not None
            save_iteration_inputs(state.save_dir, index, feed)
        input_ids = np.asarray(feed["input_ids"])
        for name, result in results.items():
            reuse = spooled if name == state.baseline else None
            state.add(name, index, result, base_outputs, input_ids, reuse)
        feeds.append(feed)
    return feeds


def _candidate_pass(runner: Any, feeds: list[dict[str, Any]], state: _FoldState) -> None:
    """Run one live candidate alone over the baseline's feeds, folding each batch against the spool."""
    from polygraphy.comparator import Comparator

    # A plain list: Polygraphy coerces each feed to this runner's input metadata, as it did when
    # every runner ran per batch on the feeds generated for the first runner.
    for index, single in enumerate(Comparator.run([runner], data_loader=list(feeds), streaming=True)):
        result = single[runner.name][0]
        state.add(
            runner.name, index, result, state.spool.baseline(index), np.asarray(feeds[index]["input_ids"])
        )
    # Comparator's generator has left its `with runner` block here: the session is closed.


def _iteration_results(single: Any, recorded: Any, live_names: list[str]) -> OrderedDict[str, Any]:
    """Runner name -> ``IterationResult`` of one batch: the recorded runners, then the live baseline."""
    results: OrderedDict[str, Any] = OrderedDict()
    for source in (recorded, single):
        if source is None:
            continue
        for name, iteration_results in source.items():
            if source is recorded and name in live_names:
                raise ConfigError(
                    f"runner name {name!r} is both in the loaded results and among the live runners; "
                    "give the live runner another name"
                )
            results[name] = iteration_results[0]
    return results


def _summaries(
    accumulators: dict[str, CandidateAccumulators],
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Per candidate: the metrics (outputs, LM, primary output, flat summary) and the histograms."""
    metrics: dict[str, dict[str, Any]] = {}
    histograms: dict[str, dict[str, Any]] = {}
    for name, acc in accumulators.items():
        outputs = {out: a.summary() for out, a in acc.outputs.items()}
        lm = acc.lm.summary() if acc.lm is not None else None
        primary = LOGITS if LOGITS in outputs else next(iter(outputs))
        summary = {**outputs[primary], **(lm or {})}
        metrics[name] = {"outputs": outputs, "lm": lm, "primary_output": primary, "summary": summary}
        histograms[name] = {out: a.histogram() for out, a in acc.outputs.items()}
    return metrics, histograms


def _fold_candidate(
    name: str,
    base_outputs: Mapping[str, Any],
    cand_outputs: Mapping[str, Any],
    input_ids: np.ndarray,
    acc: CandidateAccumulators,
) -> None:
    """Fold one batch of one candidate against the baseline's outputs of the same batch."""
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
        acc.lm.update(base_outputs[LOGITS], cand_outputs[LOGITS], input_ids)
