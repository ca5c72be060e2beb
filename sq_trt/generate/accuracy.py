"""Generation-level accuracy of a candidate against the FP16 baseline: what a user of the engine sees.

For each held-out prompt, both generate ``T`` tokens greedily through the same
decode loop (:func:`sq_trt.generate.loop.generate`). Reported:

* ``exact_match_rate``: fraction of prompts whose whole continuation is identical;
* ``mean_first_divergence``: mean index of the first differing token (``T`` when identical),
  so 0 means the very first token differs;
* ``teacher_forced_top1``: per-step agreement under teacher forcing: the candidate reads the
  baseline's own continuation and predicts each next token; fraction of steps whose
  top-1 equals the baseline's token. Unlike the free-running figures, one early
  divergence does not decide every later step.

Samples (prompt, both continuations) are kept for the report's side-by-side.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from sq_trt.errors import DataError
from sq_trt.generate.loop import generate, teacher_forced_logits

if TYPE_CHECKING:
    from sq_trt.generate.runners import StepRunner

METRIC_NAMES = ("exact_match_rate", "mean_first_divergence", "teacher_forced_top1")


@dataclass
class GenerationSample:
    """One prompt with the baseline's and the candidate's greedy continuations (token ids, and text if decoded)."""

    prompt_ids: list[int]
    baseline_ids: list[int]
    candidate_ids: list[int]
    first_divergence: int
    prompt: str = ""
    baseline: str = ""
    candidate: str = ""


@dataclass
class GenerationAccuracy:
    """Generation-level metrics of one candidate (see the module docstring)."""

    prompts: int
    new_tokens: int
    exact_match_rate: float
    mean_first_divergence: float
    teacher_forced_top1: float
    samples: list[GenerationSample] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        """The three figures by name (what gate expressions read)."""
        return {name: float(getattr(self, name)) for name in METRIC_NAMES}

    def to_json(self) -> dict[str, Any]:
        """JSON form for the compare results."""
        return asdict(self)


def first_divergence(a: Sequence[int], b: Sequence[int]) -> int:
    """Index of the first position where ``a`` and ``b`` differ (the shorter length if one is a prefix)."""
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return index
    return min(len(a), len(b)) if len(a) != len(b) else len(a)


def baseline_continuations(
    baseline: StepRunner, prompts: Sequence[Sequence[int]], *, new_tokens: int
) -> list[list[int]]:
    """The baseline's greedy continuation of every prompt, to share between candidates.

    Greedy decoding is deterministic, so computing these once and closing the
    baseline before the candidates open gives every candidate the same
    reference with one runner in memory at a time.
    """
    return [generate(baseline, prompt, max_new_tokens=new_tokens).token_ids for prompt in prompts]


def generation_accuracy(
    baseline: StepRunner | None,
    candidate: StepRunner,
    prompts: Sequence[Sequence[int]],
    *,
    new_tokens: int,
    decode: Callable[[Sequence[int]], str] | None = None,
    keep_samples: int = 4,
    continuations: Sequence[Sequence[int]] | None = None,
) -> GenerationAccuracy:
    """Greedy continuations of every prompt through both runners, and the three metrics.

    Args:
        baseline: The reference (the FP16 graph or engine); None when ``continuations`` are given.
        candidate: The INT8 candidate.
        prompts: Token ids of each prompt.
        new_tokens: Tokens generated per prompt (no early stop: EOS is a token like any other here).
        decode: Token ids -> text, for the samples.
        keep_samples: How many samples to keep for the report.
        continuations: The baseline's continuations (:func:`baseline_continuations`), instead of running it.

    Raises:
        DataError: No prompts.
    """
    import numpy as np

    if not prompts:
        raise DataError("generation accuracy needs at least one prompt; give held-out text or a prompts file")
    if continuations is None:
        assert baseline is not None, "give the baseline runner or its continuations"
        continuations = baseline_continuations(baseline, prompts, new_tokens=new_tokens)
    matches, divergences, agree, steps = 0, [], 0, 0
    samples: list[GenerationSample] = []
    for prompt, reference in zip(prompts, continuations, strict=True):
        ours = list(reference)
        theirs = generate(candidate, prompt, max_new_tokens=new_tokens).token_ids
        where = first_divergence(ours, theirs)
        matches += ours == theirs
        divergences.append(where)
        forced = teacher_forced_logits(candidate, prompt, ours)
        agree += int(np.sum(np.argmax(forced, axis=-1) == np.asarray(ours)))
        steps += len(ours)
        if len(samples) < keep_samples:
            sample = GenerationSample(list(prompt), ours, theirs, where)
            if decode is not None:
                sample.prompt, sample.baseline, sample.candidate = (
                    decode(prompt),
                    decode(ours),
                    decode(theirs),
                )
            samples.append(sample)
    return GenerationAccuracy(
        prompts=len(prompts),
        new_tokens=new_tokens,
        exact_match_rate=matches / len(prompts),
        mean_first_divergence=float(np.mean(divergences)),
        teacher_forced_top1=agree / steps,
        samples=samples,
    )
