"""The accuracy gate: parsing, evaluation, and the exit codes of `sq-trt compare` (0 pass, 3 fail, 1 user error)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sq_trt.cli import main
from sq_trt.compare.gate import Gate, GateCondition, raise_if_failed
from sq_trt.errors import ConfigError, GateFailedError

SUMMARIES = {
    "naive": {"ppl_increase_pct": 3.0, "top1_agreement": 0.90},
    "sq": {"ppl_increase_pct": 0.5, "top1_agreement": 0.97},
}


def test_parse_conditions() -> None:
    condition = GateCondition.parse("ppl_increase_pct<=1")
    assert (condition.metric, condition.op, condition.threshold, condition.candidate) == (
        "ppl_increase_pct",
        "<=",
        1.0,
        None,
    )
    scoped = GateCondition.parse(" sq-per-token : top1_agreement >= 0.95 ")
    assert (scoped.candidate, scoped.metric, scoped.op, scoped.threshold) == (
        "sq-per-token",
        "top1_agreement",
        ">=",
        0.95,
    )
    assert str(scoped) == "sq-per-token:top1_agreement>=0.95"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ppl_increase_pct=1", "is not of the form"),
        ("perplexity<=1", "known metrics"),
        ("ppl<=abc", "finite number"),
        ("ppl<=nan", "finite number"),
    ],
)
def test_parse_refuses_bad_conditions(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        GateCondition.parse(text)


def test_unscoped_condition_applies_to_every_candidate() -> None:
    verdict = Gate.parse(["ppl_increase_pct<=1"]).evaluate(SUMMARIES)
    assert not verdict.passed
    assert [(r.candidate, r.passed) for r in verdict.results] == [("naive", False), ("sq", True)]
    assert "naive" in verdict.describe_failures() and "sq:" not in verdict.describe_failures()


def test_scoped_condition_judges_only_its_candidate() -> None:
    verdict = Gate.parse(["sq:ppl_increase_pct<=1", "sq:top1_agreement>=0.95"]).evaluate(SUMMARIES)
    assert verdict.passed
    assert {r.candidate for r in verdict.results} == {"sq"}
    raise_if_failed(verdict, "out")  # no exception


def test_strict_operators_and_boundaries() -> None:
    summaries = {"c": {"kl_mean": 0.5}}
    assert Gate.parse(["kl_mean<=0.5"]).evaluate(summaries).passed
    assert not Gate.parse(["kl_mean<0.5"]).evaluate(summaries).passed
    assert Gate.parse(["kl_mean>=0.5"]).evaluate(summaries).passed
    assert not Gate.parse(["kl_mean>0.5"]).evaluate(summaries).passed


def test_missing_metric_fails_instead_of_passing() -> None:
    verdict = Gate.parse(["ppl<=100"]).evaluate({"encoder": {"cosine": 0.99}})
    assert not verdict.passed
    assert "missing" in verdict.results[0].reason


def test_unknown_candidate_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="names candidate 'other'"):
        Gate.parse(["other:ppl<=1"]).evaluate(SUMMARIES)


def test_failed_verdict_raises_exit_code_3() -> None:
    verdict = Gate.parse(["top1_agreement>=0.95"]).evaluate(SUMMARIES)
    with pytest.raises(GateFailedError) as info:
        raise_if_failed(verdict, "work/compare")
    assert info.value.exit_code == 3
    assert "work/compare" in str(info.value)


TINY = ["--model", "tiny:llama", "--samples", "4", "--seq-len", "32", "--batch-size", "2", "--no-progress"]


def _compare(out: Path, candidate: str, *gates: str) -> int:
    argv = [
        "compare",
        "--baseline",
        "fp=torch:tiny:llama",
        "--candidate",
        candidate,
        "--out",
        str(out),
        *TINY,
    ]
    for gate in gates:
        argv += ["--gate", gate]
    return main(argv)


def test_cli_gate_pass_exits_0(tmp_path: Path) -> None:
    # The candidate is the same float model: agreement is exactly 1 and KL 0.
    assert _compare(tmp_path / "c", "same=torch:tiny:llama", "top1_agreement>=1", "kl_mean<=0") == 0
    comparison = json.loads((tmp_path / "c" / "comparison.json").read_text())
    assert comparison["gate"]["passed"] is True


def test_cli_gate_failure_exits_3_after_writing_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Naive W8A8 changes the logits, so a KL of zero is out of reach.
    code = _compare(tmp_path / "c", "naive=torch-w8a8:tiny:llama", "naive:kl_mean<=0")
    assert code == 3
    comparison = json.loads((tmp_path / "c" / "comparison.json").read_text())
    assert comparison["gate"]["passed"] is False
    assert comparison["metrics"]["naive"]["summary"]["kl_mean"] > 0
    assert "accuracy gate failed" in capsys.readouterr().err


def test_cli_bad_gate_exits_1_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _compare(tmp_path / "c", "same=torch:tiny:llama", "ppl~1") == 1
    assert not (tmp_path / "c").exists()
    assert "is not of the form" in capsys.readouterr().err


# Summaries as a comparison may hold them: a number as a string, a boolean, NaN, a numpy scalar.
ODD_SUMMARIES = {
    "a": {"ppl_increase_pct": 0.5, "top1_agreement": "0.99", "kl_mean": True},
    "b": {"ppl_increase_pct": np.float32(2.0), "top1_agreement": 0.97, "kl_mean": float("nan")},
}
ODD_CONDITIONS = ["ppl_increase_pct<=1", "top1_agreement>=0.95", "b:kl_mean<=1"]
# Worked out by hand: only real, finite numbers are compared; anything else is a missing metric.
ODD_EXPECTED = [
    ("a", "ppl_increase_pct<=1", True),
    ("b", "ppl_increase_pct<=1", False),  # 2.0 > 1
    ("a", "top1_agreement>=0.95", False),  # a string, not a number
    ("b", "top1_agreement>=0.95", True),
    ("b", "b:kl_mean<=1", False),  # NaN
]


def _outcomes(verdict: Any) -> list[tuple[str, str, bool]]:
    results = verdict["results"] if isinstance(verdict, dict) else [asdict(r) for r in verdict.results]
    return [(r["candidate"], r["condition"], r["passed"]) for r in results]


def test_non_numeric_summaries_give_the_same_verdict_in_compare_report_and_pipeline(tmp_path: Path) -> None:
    from sq_trt.artifacts import artifact_dir
    from sq_trt.artifacts.comparison import write_comparison
    from sq_trt.compare.gate import comparison_verdict
    from sq_trt.report import load_verdict, write_report

    record: dict[str, Any] = {
        "baseline": {"name": "fp16", "kind": "onnx"},
        "candidates": [{"name": "a", "kind": "onnx"}, {"name": "b", "kind": "onnx"}],
        "model": {"source": "tiny:llama"},
        "data": {"source": "test"},
        "gate_conditions": ODD_CONDITIONS,
        "metrics": {name: {"summary": summary, "outputs": {}} for name, summary in ODD_SUMMARIES.items()},
    }
    compare_verdict = comparison_verdict(record, ODD_CONDITIONS)  # what compare stores
    assert _outcomes(compare_verdict) == ODD_EXPECTED and compare_verdict.passed is False
    assert _outcomes(Gate.parse(ODD_CONDITIONS).evaluate(ODD_SUMMARIES)) == ODD_EXPECTED

    compare_dir = tmp_path / "compare"
    with artifact_dir(compare_dir, stage="compare", config={}, inputs={}) as tmp:
        write_comparison(tmp, {**record, "gate": compare_verdict.to_json()})
    # The report with the comparison's own gate (its stored verdict must agree) and with the
    # recipe's (the pipeline's way); the pipeline then reads the verdict from its report.
    own = write_report(compare_dir, tmp_path / "own")
    given = write_report(compare_dir, tmp_path / "given", gate=ODD_CONDITIONS)
    pipeline = load_verdict(tmp_path / "given")
    for verdict in (own.verdict, given.verdict, pipeline):
        assert _outcomes(verdict) == ODD_EXPECTED
    assert own.verdict["passed"] is given.verdict["passed"] is pipeline.passed is False
