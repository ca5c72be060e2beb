"""The accuracy gate: typed conditions on a candidate's summary metrics.

A condition reads ``[candidate:]metric OP value`` with ``OP`` one of ``<=``,
``<``, ``>=``, ``>``, for example ``ppl_increase_pct<=1`` or
``sq-per-token:top1_agreement>=0.95``. Without a candidate prefix it applies to
every candidate. The same strings come from the recipe (a list under ``gate``)
and from ``--gate`` flags. A failing gate raises :class:`GateFailedError`
(exit code 3) after the results are written.
"""

from __future__ import annotations

import math
import numbers
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from sq_trt.errors import ConfigError, GateFailedError

# Metrics a gate may name, with the direction that is "better" (for messages).
GATE_METRICS: dict[str, str] = {
    "ppl": "lower",
    "ppl_increase_pct": "lower",
    "top1_agreement": "higher",
    "top5_agreement": "higher",
    "kl_mean": "lower",
    "kl_max": "lower",
    "cosine": "higher",
    "row_cosine_mean": "higher",
    "row_cosine_min": "higher",
    "abs_max": "lower",
    "abs_mean": "lower",
    "abs_median": "lower",
    "abs_p99": "lower",
    "rel_max": "lower",
    "rel_mean": "lower",
    "rel_median": "lower",
    "rel_p99": "lower",
    # Generation-level (sq_trt.generate.accuracy): greedy continuations vs the baseline's.
    "exact_match_rate": "higher",
    "mean_first_divergence": "higher",
    "teacher_forced_top1": "higher",
}

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
_PATTERN = re.compile(
    r"^\s*(?:(?P<cand>[^:\s<>=]+)\s*:)?\s*(?P<metric>[a-z0-9_]+)\s*(?P<op><=|>=|<|>)\s*(?P<value>\S+)\s*$"
)

@dataclass(frozen=True)
class GateCondition:
    """One condition: ``metric op threshold``, for one candidate or all (``candidate=None``)."""

    metric: str
    op: str
    threshold: float
    candidate: str | None = None

    @classmethod
    def parse(cls, text: str) -> GateCondition:
        """Parse ``[candidate:]metric OP value``.

        Raises:
            ConfigError: Unparseable text, unknown metric, or a non-finite threshold.
        """
        match = _PATTERN.match(text)
        if match is None:
            raise ConfigError(
                f"gate condition {text!r} is not of the form '[candidate:]metric OP value' with OP one of "
                f"<=, <, >=, > (e.g. 'ppl_increase_pct<=1' or 'top1_agreement>=0.95')"
            )
        metric = match["metric"]
        if metric not in GATE_METRICS:
            raise ConfigError(
                f"gate condition {text!r} names metric {metric!r}; known metrics: {sorted(GATE_METRICS)}"
            )
        try:
            threshold = float(match["value"])
        except ValueError:
            threshold = math.nan
        if not math.isfinite(threshold):
            raise ConfigError(
                f"gate condition {text!r} has threshold {match['value']!r}; expected a finite number"
            )
        return cls(metric=metric, op=match["op"], threshold=threshold, candidate=match["cand"])

    def __str__(self) -> str:
        prefix = f"{self.candidate}:" if self.candidate else ""
        return f"{prefix}{self.metric}{self.op}{self.threshold:g}"


@dataclass(frozen=True)
class ConditionResult:
    """The outcome of one condition on one candidate."""

    candidate: str
    condition: str
    value: float | None
    passed: bool
    reason: str


@dataclass(frozen=True)
class GateVerdict:
    """The gate's outcome over every candidate."""

    passed: bool
    results: tuple[ConditionResult, ...]

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly form (stored in ``comparison.json`` and ``report.json``)."""
        return {"passed": self.passed, "results": [asdict(r) for r in self.results]}

    @classmethod
    def from_json(cls, data: Any) -> GateVerdict:
        """The verdict :meth:`to_json` wrote.

        Raises:
            TypeError, KeyError: ``data`` is not such a verdict.
        """
        passed = data["passed"]
        if not isinstance(passed, bool) or not isinstance(data["results"], list):
            raise TypeError("a verdict is {'passed': bool, 'results': [...]}")
        return cls(passed=passed, results=tuple(ConditionResult(**r) for r in data["results"]))

    def describe_failures(self) -> str:
        """One line per failed condition."""
        return "; ".join(f"{r.candidate}: {r.reason}" for r in self.results if not r.passed)


@dataclass(frozen=True)
class Gate:
    """A set of conditions."""

    conditions: tuple[GateCondition, ...]

    @classmethod
    def parse(cls, texts: Iterable[str]) -> Gate:
        """Parse condition strings (see :meth:`GateCondition.parse`)."""
        return cls(tuple(GateCondition.parse(t) for t in texts))

    def evaluate(self, summaries: Mapping[str, Mapping[str, Any]]) -> GateVerdict:
        """Check every condition against each candidate's summary metrics: the one gate evaluation.

        Args:
            summaries: Candidate name -> flat metric dict.

        Returns:
            The verdict. A condition naming a metric a candidate lacks (e.g.
            ``ppl`` for an encoder), or whose value is not a finite number (a string,
            a boolean, NaN), fails with a reason, never passes silently.

        Raises:
            ConfigError: A condition names a candidate that is not in ``summaries``.
        """
        results: list[ConditionResult] = []
        for condition in self.conditions:
            if condition.candidate is not None and condition.candidate not in summaries:
                raise ConfigError(
                    f"gate condition {condition} names candidate {condition.candidate!r}; "
                    f"the candidates are {sorted(summaries)}"
                )
            targets = [condition.candidate] if condition.candidate else list(summaries)
            for name in targets:
                value = _number(summaries[name].get(condition.metric))
                if value is None or not math.isfinite(value):
                    results.append(
                        ConditionResult(
                            name,
                            str(condition),
                            value,
                            False,
                            f"{condition}: metric missing or not finite ({value})",
                        )
                    )
                    continue
                passed = _OPERATORS[condition.op](value, condition.threshold)
                verb = "holds" if passed else "fails"
                reason = f"{condition.metric}={value:.6g} {verb} {condition.op} {condition.threshold:g}"
                results.append(ConditionResult(name, str(condition), float(value), passed, reason))
        return GateVerdict(passed=all(r.passed for r in results), results=tuple(results))


def _number(value: Any) -> float | None:
    """A summary value as the gate reads it: a real number (numpy's too; booleans are not), else missing."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def comparison_verdict(comparison: Mapping[str, Any], conditions: Iterable[str]) -> GateVerdict:
    """The gate ``conditions`` over a comparison record's candidate summaries (``comparison.json``).

    Compare judges the record it is about to write with this, and the report the record it
    read back, so both give the same verdict for the same metrics and conditions.

    Raises:
        ConfigError: A malformed condition, or one naming a candidate the comparison lacks.
        KeyError, TypeError: The record has no ``candidates`` / ``metrics`` of that shape.
    """
    metrics = comparison["metrics"]
    summaries = {}
    for entry in comparison["candidates"]:
        summary = metrics[entry["name"]]["summary"]
        if not isinstance(summary, Mapping):
            raise TypeError(f"the summary of {entry['name']!r} is a {type(summary).__name__}, expected an object")
        summaries[entry["name"]] = summary
    return Gate.parse(conditions).evaluate(summaries)


def raise_if_failed(verdict: GateVerdict, where: str) -> None:
    """Raise :class:`GateFailedError` (exit code 3) when the verdict failed.

    Args:
        verdict: The gate's outcome.
        where: Where the results were written (for the message).
    """
    if not verdict.passed:
        raise GateFailedError(
            f"accuracy gate failed: {verdict.describe_failures()}. Results are in {where}; "
            "see the report's per-layer ranking for the layers to exclude or re-smooth"
        )
