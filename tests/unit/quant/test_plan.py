"""The hybrid plan's rule and its file: decided by measured error ratios, within a FLOP budget, verified on load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sq_trt.artifacts import artifact_dir
from sq_trt.errors import ArtifactError
from sq_trt.quant.plan import (
    PLAN_FILE,
    PLAN_SCHEMA,
    LinearMeasurement,
    PlanRule,
    QuantPlan,
    choose_modes,
    load_plan,
    plan_from_json,
    read_plan,
    write_plan,
)


def _layer(i: int, down_ratio: float = 100.0) -> list[LinearMeasurement]:
    """A Llama-like layer: q/k/v share an input, o alone, gate/up share one, down alone (ratios as given)."""
    return [
        LinearMeasurement(f"l{i}.q", 4, 2.0, 1.0, unit=f"l{i}.attn"),
        LinearMeasurement(f"l{i}.k", 1, 2.0, 1.0, unit=f"l{i}.attn"),
        LinearMeasurement(f"l{i}.v", 1, 2.0, 1.0, unit=f"l{i}.attn"),
        LinearMeasurement(f"l{i}.o", 4, 3.0, 1.0, unit=f"l{i}.o"),
        LinearMeasurement(f"l{i}.gate", 10, 1.5, 1.0, unit=f"l{i}.mlp"),
        LinearMeasurement(f"l{i}.up", 10, 1.5, 1.0, unit=f"l{i}.mlp"),
        LinearMeasurement(f"l{i}.down", 10, down_ratio, 1.0, unit=f"l{i}.down"),
    ]


def test_per_token_only_where_static_error_exceeds_the_threshold() -> None:
    measured = _layer(0) + _layer(1)
    modes = {name: c.act_mode for name, c in choose_modes(measured, PlanRule(threshold=8.0, budget=0.5)).items()}
    assert [n for n, m in modes.items() if m == "per_token"] == ["l0.down", "l1.down"]


def test_linears_of_one_input_share_a_decision() -> None:
    measured = _layer(0)
    # q alone would pass a threshold of 1.9; the attention input's summed ratio (6 / 3 = 2) decides for all three.
    choices = choose_modes(measured, PlanRule(threshold=1.9, budget=1.0))
    assert {choices[n].act_mode for n in ("l0.q", "l0.k", "l0.v")} == {"per_token"}
    choices = choose_modes(measured, PlanRule(threshold=2.0, budget=1.0))
    assert {choices[n].act_mode for n in ("l0.q", "l0.k", "l0.v")} == {"per_tensor"}


def test_budget_takes_the_largest_ratios_first() -> None:
    # Two downs of 10 FLOPs each out of 80: a 0.2 budget holds both, 0.15 only the worse one.
    measured = _layer(0, down_ratio=50.0) + _layer(1, down_ratio=500.0)
    choices = choose_modes(measured, PlanRule(threshold=8.0, budget=0.15))
    assert choices["l1.down"].act_mode == "per_token"
    assert choices["l0.down"].act_mode == "per_tensor"
    assert "budget" in choices["l0.down"].reason and "spent" in choices["l0.down"].reason
    plan = QuantPlan(choices)
    assert plan.per_token_flops_share() == pytest.approx(10 / 80)
    both = choose_modes(measured, PlanRule(threshold=8.0, budget=0.25))
    assert {both["l0.down"].act_mode, both["l1.down"].act_mode} == {"per_token"}


def test_forced_globs_win_and_per_tensor_wins_a_tie() -> None:
    measured = _layer(0)
    rule = PlanRule(threshold=8.0, budget=0.0, force_per_token=("*.gate", "*.o"), force_per_tensor=("*.down", "*.o"))
    choices = choose_modes(measured, rule)
    assert choices["l0.gate"].act_mode == "per_token" and "force_per_token" in choices["l0.gate"].reason
    assert choices["l0.down"].act_mode == "per_tensor" and "force_per_tensor" in choices["l0.down"].reason
    assert choices["l0.o"].act_mode == "per_tensor" and "per tensor wins" in choices["l0.o"].reason
    assert choices["l0.up"].act_mode == "per_tensor"  # its unit's ratio 1.5 is within the threshold


def test_exact_per_token_error_counts_as_an_infinite_ratio() -> None:
    assert LinearMeasurement("a", 1, 1e-3, 0.0).ratio == float("inf")
    assert LinearMeasurement("a", 1, 0.0, 0.0).ratio == 1.0
    choices = choose_modes([LinearMeasurement("a", 1, 1e-3, 0.0)], PlanRule(threshold=8.0, budget=1.0))
    assert choices["a"].act_mode == "per_token" and "inf x" in choices["a"].reason


def test_plan_file_round_trips(tmp_path: Path) -> None:
    rule = PlanRule(threshold=4.0, budget=0.25, force_per_token=("*.down",))
    plan = QuantPlan(choose_modes(_layer(0), rule), smoothed="/work/smooth", rule=rule)
    write_plan(plan, tmp_path)
    data = json.loads((tmp_path / PLAN_FILE).read_text())
    assert data["schema"] == PLAN_SCHEMA and data["smoothed"] == "/work/smooth"
    assert data["linears"]["l0.down"]["act_mode"] == "per_token"
    back = read_plan(tmp_path)
    assert back is not None and back.modes() == plan.modes() and back.rule == rule
    assert back.per_token_flops_share() == pytest.approx(plan.per_token_flops_share())


@pytest.mark.parametrize(
    ("document", "match"),
    [
        ({"schema": "sq-trt/quant-plan/0", "linears": {"a": {"act_mode": "per_token"}}}, "schema"),
        ({"schema": PLAN_SCHEMA, "linears": {}}, "no linears"),
        ({"schema": PLAN_SCHEMA, "linears": {"a": {"act_mode": "int4"}}}, "act_mode"),
        ({"schema": PLAN_SCHEMA, "linears": {"a": {"act_mode": "per_tensor", "amax": float("nan")}}}, "amax"),
        ({"schema": PLAN_SCHEMA, "linears": {"a": {"act_mode": "per_tensor", "flops": -1}}}, "flops"),
        ([1, 2], "schema"),
    ],
)
def test_malformed_plans_are_refused(document: object, match: str) -> None:
    with pytest.raises(ArtifactError, match=match):
        plan_from_json(document)


def test_a_tampered_plan_in_an_artifact_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "artifact"
    plan = QuantPlan(choose_modes(_layer(0), PlanRule()))
    with artifact_dir(out, stage="smooth", config={}, inputs={}) as tmp:
        write_plan(plan, tmp)
    loaded = load_plan(out)
    assert loaded is not None and loaded.modes() == plan.modes()
    data = json.loads((out / PLAN_FILE).read_text())
    data["linears"]["l0.q"]["act_mode"] = "per_token"
    (out / PLAN_FILE).write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="changed since the manifest"):
        load_plan(out)


def test_an_artifact_without_a_plan_has_none(tmp_path: Path) -> None:
    out = tmp_path / "artifact"
    with artifact_dir(out, stage="smooth", config={}, inputs={}) as tmp:
        (tmp / "x.txt").write_text("x")
    assert load_plan(out) is None
