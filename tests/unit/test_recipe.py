"""Pipeline recipes: the shipped ones validate, --set overrides apply, bad fields are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from sq_trt.errors import ConfigError
from sq_trt.pipeline.recipe import apply_overrides, load_recipe, parse_override, validate_recipe

BUILDERS = Path(__file__).resolve().parents[2] / "builders"
SHIPPED = ("smollm2-135m.yaml", "bert-base.yaml", "llama-3.2-1b.gpu.yaml")


def _minimal(**extra: object) -> dict[str, object]:
    return {"kind": "pipeline", "name": "t", "model": {"source": "tiny:llama"}, **extra}


def _error(data: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as info:
        validate_recipe(data, source="r.yaml")
    return str(info.value)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_recipes_validate(name: str) -> None:
    recipe = load_recipe(BUILDERS / name)
    assert recipe.kind == "pipeline"
    assert recipe.resolved_work_dir == Path("work") / recipe.name
    # Every gate condition names a candidate the recipe exports (validated, but make the intent explicit).
    names = {c.name for c in recipe.export.candidates}
    assert all(cond.split(":", 1)[0] in names for cond in recipe.gate if ":" in cond)


def test_bert_recipe_names_the_hub_model_and_runs_shape_on_tiny() -> None:
    recipe = load_recipe(BUILDERS / "bert-base.yaml", ["model.source=tiny:bert"])
    assert recipe.model.source == "tiny:bert"
    assert load_recipe(BUILDERS / "bert-base.yaml").model.source == "bert-base-uncased"


def test_gpu_recipe_targets_tensorrt_with_the_plugin_candidate() -> None:
    recipe = load_recipe(BUILDERS / "llama-3.2-1b.gpu.yaml")
    assert recipe.build.backend == "tensorrt"
    assert any(c.encoding == "plugin" for c in recipe.export.candidates)
    assert recipe.smooth.alpha == "auto"


def test_overrides_parse_values_as_yaml_and_index_lists() -> None:
    assert parse_override("smooth.alpha=0.7") == (["smooth", "alpha"], 0.7)
    assert parse_override("build.backend=none") == (["build", "backend"], "none")
    assert parse_override("gate=[a<=1]") == (["gate"], ["a<=1"])
    data = _minimal(export={"candidates": [{"name": "a"}, {"name": "b"}]})
    out = apply_overrides(data, ["export.candidates.1.encoding=plugin", "smooth.alpha=auto"])
    assert out["export"]["candidates"][1] == {"name": "b", "encoding": "plugin"}  # type: ignore[index]
    assert out["smooth"] == {"alpha": "auto"}
    assert data["export"]["candidates"][1] == {"name": "b"}  # type: ignore[index]  # input untouched


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("smooth.alpha", "not of the form section.field=value"),
        ("export.candidates.5.name=x", "index 5 is past the end"),
        ("name.x=1", "name is a str, not a section"),
    ],
)
def test_bad_overrides_are_config_errors(text: str, fragment: str) -> None:
    data = _minimal(export={"candidates": [{"name": "a"}]})
    with pytest.raises(ConfigError, match=fragment):
        apply_overrides(data, [text])


def test_unknown_field_is_named_with_a_suggestion() -> None:
    message = _error(_minimal(smooth={"alhpa": 0.5}))
    assert "smooth.alhpa: unknown field; did you mean `alpha`?" in message
    assert "r.yaml" in message


def test_unknown_section_is_named() -> None:
    assert "modle: unknown field; did you mean `model`?" in _error(
        {"kind": "pipeline", "name": "t", "modle": {}}
    )


@pytest.mark.parametrize("alpha", [1.5, -0.1, "high", True])
def test_alpha_outside_unit_interval_is_refused(alpha: object) -> None:
    message = _error(_minimal(smooth={"alpha": alpha}))
    assert "smooth.alpha: alpha must be a number in [0, 1] or 'auto'" in message


def test_alpha_override_outside_unit_interval_is_refused() -> None:
    message = _error(_minimal(smooth={"overrides": {"layers.*.mlp_in": 2}}))
    assert "smooth.overrides" in message and "'layers.*.mlp_in'" in message


def test_profile_with_min_above_opt_is_refused() -> None:
    message = _error(_minimal(build={"profiles": [{"seq": [256, 128, 512]}]}))
    assert "build.profiles.0.seq" in message and "min <= opt <= max" in message


def test_missing_model_is_refused_with_what_to_give() -> None:
    message = _error({"kind": "pipeline", "name": "t"})
    assert "model: required field is missing" in message and "tiny:<family>" in message
    message = _error({"kind": "pipeline", "name": "t", "model": {"dtype": "float32"}})
    assert "model.source: required field is missing" in message


def test_every_error_is_listed_not_just_the_first() -> None:
    message = _error(_minimal(smooth={"alpha": 2}, compare={"samples": 0}))
    assert "smooth.alpha" in message and "compare.samples" in message


def test_gate_must_parse_and_name_known_candidates() -> None:
    assert "gate" in _error(_minimal(gate=["ppl<<1"]))
    message = _error(_minimal(gate=["nope:ppl<=1"]))
    assert "names candidate 'nope'" in message


def test_plugin_encoding_needs_per_token() -> None:
    message = _error(
        _minimal(export={"candidates": [{"name": "a", "act_mode": "per_tensor", "encoding": "plugin"}]})
    )
    assert "export.candidates.0" in message and "per-token only" in message


def test_duplicate_candidates_and_path_like_names_are_refused() -> None:
    assert "duplicates ['a']" in _error(_minimal(export={"candidates": [{"name": "a"}, {"name": "a"}]}))
    assert "plain name" in _error({**_minimal(), "name": "../escape"})


def test_a_build_recipe_is_told_apart(tmp_path: Path) -> None:
    build_recipe = tmp_path / "x.rtx.yaml"
    build_recipe.write_text("backend: tensorrt_rtx\n")
    with pytest.raises(ConfigError, match="build recipe"):
        load_recipe(build_recipe)
    with pytest.raises(ConfigError, match="does not exist"):
        load_recipe(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: [pipeline\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(broken)


def test_override_errors_name_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--set smooth.alpha=3") as info:
        load_recipe(BUILDERS / "smollm2-135m.yaml", ["smooth.alpha=3"])
    assert "smooth.alpha: alpha must be a number in [0, 1]" in str(info.value)


def test_fused_gemm_encoding_is_a_per_token_candidate_option() -> None:
    recipe = validate_recipe(
        _minimal(
            export={"candidates": [{"name": "f", "act_mode": "per_token", "encoding": "fused-gemm"}]},
            gate=["f:ppl_increase_pct<=5"],
        )
    )
    assert recipe.export.candidates[0].encoding == "fused-gemm"
    message = _error(
        _minimal(export={"candidates": [{"name": "a", "act_mode": "per_tensor", "encoding": "fused-gemm"}]})
    )
    assert "'fused-gemm' is per-token only" in message
    assert "fused_gemm" in _error(_minimal(export={"candidates": [{"name": "b", "encoding": "fused_gemm"}]}))
