"""Matrix recipes: validated like pipeline recipes (the same --set), planned into keyed jobs (no Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sq_trt.errors import ConfigError
from sq_trt.matrix.config import Placement, load_matrix
from sq_trt.matrix.plan import plan_matrix

BUILDERS = Path(__file__).resolve().parents[3] / "builders"
DEMO = BUILDERS / "matrix-demo.yaml"


def test_the_demo_matrix_validates_and_plans_one_front_end_per_model_and_a_cell_per_combination() -> None:
    config, recipes = load_matrix(DEMO)
    assert [m.name for m in config.models] == ["smollm2-135m", "tiny-llama"]
    assert recipes["tiny-llama"].model.source == "tiny:llama"
    assert recipes["tiny-llama"].calibrate.samples == 2  # the entry's own --set
    # The matrix's candidates and gate replace each recipe's.
    assert [c.name for c in recipes["smollm2-135m"].export.candidates] == ["naive-per-token", "sq-per-tensor", "sq-per-token"]
    assert recipes["smollm2-135m"].gate == config.gate
    plan = plan_matrix(config, recipes)
    assert len(plan.fronts) == 2  # both targets are TensorRT-RTX: one front end per model
    assert len(plan.cells) == 2 * 3 * 2
    assert len({c.key for c in plan.cells}) == 12
    assert {c.front_key for c in plan.cells} == set(plan.fronts)


def test_keys_change_with_what_a_stage_reads_and_only_that() -> None:
    config, recipes = load_matrix(DEMO)
    base = {c.label: c for c in plan_matrix(config, recipes).cells}
    # A build setting of one target changes its cells' keys, not the front ends'.
    config2, recipes2 = load_matrix(DEMO, ["targets.1.compute_capabilities=['8.6']"])
    changed = {c.label: c for c in plan_matrix(config2, recipes2).cells}
    for label, cell in changed.items():
        assert cell.front_key == base[label].front_key
        assert (cell.key == base[label].key) == label.endswith("@rtx-ampere"), label
    # Calibration of one model changes its front end and every cell of it.
    config3, recipes3 = load_matrix(DEMO, ["models.1.set=['calibrate.samples=3']"])
    third = {c.label: c for c in plan_matrix(config3, recipes3).cells}
    for label, cell in third.items():
        assert (cell.key == base[label].key) == label.startswith("smollm2-135m/"), label


def test_tensorrt_and_rtx_targets_get_separate_front_ends_when_an_encoding_differs() -> None:
    gpu = "{name: h100, backend: tensorrt, placement: {accelerator_type: H100, gpus: 1}}"
    auto = "[{name: sq-per-token, encoding: auto}]"
    config, recipes = load_matrix(DEMO, [f"targets.1={gpu}", f"candidates={auto}", "gate=[]"])
    plan = plan_matrix(config, recipes)
    # auto -> portable for TensorRT-RTX, fused-gemm for TensorRT proper: two exports, two front ends.
    assert len(plan.fronts) == 4
    config, recipes = load_matrix(DEMO, [f"targets.1={gpu}", "candidates=[{name: sq-per-token, encoding: portable}]", "gate=[]"])
    assert len(plan_matrix(config, recipes).fronts) == 2


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("retries=-1", "retries: Input should be greater than or equal to 0"),
        ("targets.0.placement={}", "placement needs a resource, an accelerator_type or labels"),
        ("targets.0.backend=tensorrt", "compute_capabilities are TensorRT-RTX's"),
        ("targets.1.name=rtx-ampere", "target names must be unique"),
        ("models.0.source=demo", "needs exactly one of `recipe`"),
        ("targets.0.plcement={}", "did you mean `placement`"),
        ("gate=['nope:ppl_increase_pct<=1']", "models.0 (smollm2-135m)"),
        ("models.1.set=['calibrate.samples=0']", "calibrate.samples"),
    ],
)
def test_invalid_fields_are_named_before_anything_runs(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_matrix(DEMO, [override])
    assert message in str(info.value)


def test_a_pipeline_recipe_is_not_a_matrix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected 'matrix'"):
        load_matrix(BUILDERS / "smollm2-135m.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_matrix(tmp_path / "missing.yaml")


def test_placement_becomes_ray_options() -> None:
    assert Placement(resource="target:rtx-ada", amount=0.5).ray_options() == {"resources": {"target:rtx-ada": 0.5}}
    assert Placement(accelerator_type="H100", gpus=1).ray_options() == {"accelerator_type": "H100", "num_gpus": 1}
    assert Placement(labels={"gpu": "l4"}).ray_options() == {"label_selector": {"gpu": "l4"}}


def test_a_local_store_is_made_absolute_and_a_url_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config, _ = load_matrix(DEMO, ["store=rel/store"])
    assert config.resolved_store == str(tmp_path / "rel" / "store")
    config, _ = load_matrix(DEMO)
    assert config.resolved_store == str(tmp_path / "work" / "matrix-demo" / "store")
    config, _ = load_matrix(DEMO, ["store=s3://bucket/prefix"])
    assert config.resolved_store == "s3://bucket/prefix"
