"""The accuracy gate: parsing, evaluation, and the exit codes of `sq-trt compare` (0 pass, 3 fail, 1 user error)."""

from __future__ import annotations

import json
from pathlib import Path

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
