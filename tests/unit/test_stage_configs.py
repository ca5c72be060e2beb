"""Stage configs are defined once: the recipe and the CLI reach every field, with one default and one check."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from sq_trt.cli import build_parser, main
from sq_trt.errors import ConfigError
from sq_trt.export.config import ExportConfig
from sq_trt.pipeline.recipe import load_recipe, validate_recipe

BUILDERS = Path(__file__).resolve().parents[2] / "builders"


def _minimal(**extra: object) -> dict[str, object]:
    return {"kind": "pipeline", "name": "t", "model": {"source": "tiny:llama"}, **extra}


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    found: argparse.ArgumentParser = sub.choices[command]
    return found


@pytest.mark.parametrize("opset", [16, 17, 18, 19, 20, 22, 23])
def test_recipe_accepts_exactly_the_opsets_the_exporter_accepts(opset: int) -> None:
    try:
        ExportConfig.create(opset=opset)
        exporter_ok = True
    except ConfigError:
        exporter_ok = False
    try:
        load_recipe(BUILDERS / "smollm2-135m.yaml", [f"export.opset={opset}"])
        recipe_ok = True
    except ConfigError as exc:
        assert "export.opset" in str(exc)
        recipe_ok = False
    assert recipe_ok == exporter_ok
    assert exporter_ok == (19 <= opset <= 22)


def test_a_combination_the_exporter_refuses_fails_at_recipe_validation() -> None:
    with pytest.raises(ConfigError, match="candidate 'a'.*quantize_bmm is not supported with with_past"):
        validate_recipe(
            _minimal(export={"with_past": True, "candidates": [{"name": "a", "quantize_bmm": True}]}, gate=[])
        )


def test_set_export_opset_18_fails_before_calibrate_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "work"
    code = main(
        [
            "pipeline",
            "--recipe",
            str(BUILDERS / "smollm2-135m.yaml"),
            "--set",
            f"work_dir={work}",
            "--set",
            f"engines_dir={tmp_path / 'engines'}",
            "--set",
            "export.opset=18",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "export.opset" in err and "greater than or equal to 19" in err
    assert not work.exists()  # nothing ran: no calibrate directory, no cache record


@pytest.mark.parametrize("spelling", ["per-tensor", "per_tensor"])
def test_act_mode_has_one_spelling_and_accepts_the_other_everywhere(spelling: str) -> None:
    recipe = validate_recipe(_minimal(export={"candidates": [{"name": "a", "act_mode": spelling}]}, gate=[]))
    assert recipe.export.candidates[0].act_mode == "per_tensor"
    args = _subparser("export").parse_args(["--out", "x", "--act-mode", spelling])
    assert args.act_mode == "per_tensor"
    assert ExportConfig.create(act_mode=spelling).act_mode == "per_tensor"


def _flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {option: action for action in parser._actions for option in action.option_strings}


def _cli_default(action: argparse.Action) -> Any:
    if isinstance(action, argparse._StoreTrueAction):
        return False
    if isinstance(action, argparse._StoreFalseAction):
        return True
    default = action.default
    return tuple(default) if isinstance(default, list) else default


def test_every_export_config_field_is_a_flag_and_a_recipe_field_with_one_default() -> None:
    from sq_trt.pipeline.recipe import Candidate, ExportSection
    from sq_trt.stage_config import cli_flag

    flags = _flags(_subparser("export"))
    recipe_fields = set(ExportSection.model_fields) | set(Candidate.model_fields)
    for name, info in ExportConfig.model_fields.items():
        flag = cli_flag(ExportConfig, name)
        assert flag is not None, f"ExportConfig.{name} has no command-line flag"
        action = flags.get(flag) or flags.get("--no-" + flag.removeprefix("--"))
        assert action is not None, f"sq-trt export has no {flag} for ExportConfig.{name}"
        assert action.dest == name
        default = info.get_default(call_default_factory=True)
        assert _cli_default(action) == default, f"{flag}: CLI default {action.default!r} != {default!r}"
        assert name in recipe_fields, f"ExportConfig.{name} is not settable in a recipe"
        section = ExportSection if name in ExportSection.model_fields else Candidate
        assert section.model_fields[name].get_default(call_default_factory=True) == default


def _stage_models() -> list[tuple[str, type[Any], list[type[Any]]]]:
    """(subcommand, the stage's config, the recipe models that hold its fields)."""
    from sq_trt.calibrate.stage import CalibrateConfig
    from sq_trt.compare.config import CompareOptions
    from sq_trt.engine.config import BuildOptions
    from sq_trt.pipeline.recipe import BuildSection, Candidate, CompareSection, ExportSection, Recipe
    from sq_trt.report.config import ReportOptions
    from sq_trt.smooth.config import SmoothConfig

    fields = Recipe.model_fields
    assert fields["calibrate"].annotation is CalibrateConfig  # the sections ARE the stage configs
    assert fields["smooth"].annotation is SmoothConfig
    assert fields["report"].annotation is ReportOptions
    return [
        ("calibrate", CalibrateConfig, [CalibrateConfig]),
        ("smooth", SmoothConfig, [SmoothConfig]),
        ("export", ExportConfig, [ExportSection, Candidate]),
        ("build", BuildSection, [BuildSection]),
        ("compare", CompareSection, [CompareSection]),
        ("report", ReportOptions, [ReportOptions]),
    ] + [("build", BuildOptions, [BuildSection]), ("compare", CompareOptions, [CompareSection])]


def _flag_of(model: type[Any], name: str, prefix: str = "") -> list[str]:
    from sq_trt.stage_config import cli_flag

    flag = cli_flag(model, name)
    assert flag is not None, f"{model.__name__}.{name} has no command-line flag"
    flags = flag.split()
    return [f"--{prefix}-{f.removeprefix('--')}" if prefix else f for f in flags]


def _normalized(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_normalized(v) for v in value)
    if isinstance(value, str):
        try:
            return float(value)  # --alpha's text form
        except ValueError:
            return value
    return value


def _check_field(command: str, model: type[Any], name: str, flags: dict[str, argparse.Action], prefix: str = "") -> None:
    from pydantic import BaseModel

    info = model.model_fields[name]
    if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
        # A nested config (smooth's search): every field of it, under the prefix its flag names.
        nested_prefix = _flag_of(model, name)[0].strip("-")
        for nested in info.annotation.model_fields:
            _check_field(command, info.annotation, nested, flags, prefix=nested_prefix)
        return
    names = _flag_of(model, name, prefix)
    for flag in names:
        action = flags.get(flag) or flags.get("--no-" + flag.removeprefix("--"))
        assert action is not None, f"sq-trt {command} has no {flag} for {model.__name__}.{name}"
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    if len(names) > 1 or "cli_form" in extra:
        return  # a different form on the command line (ranges, a runner spec): the flag's existence is the check
    action = flags.get(names[0]) or flags["--no-" + names[0].removeprefix("--")]
    default = info.get_default(call_default_factory=True)
    if command == "build" and action.default is None:
        return  # sq-trt build merges flags over a build recipe: "not given" keeps the field's default
    assert _normalized(_cli_default(action)) == _normalized(default), (
        f"sq-trt {command} {names[0]} defaults to {action.default!r}, {model.__name__}.{name} to {default!r}"
    )


@pytest.mark.parametrize("index", range(8))
def test_every_stage_config_field_is_reachable_from_the_cli_and_the_recipe(index: int) -> None:
    command, model, recipe_models = _stage_models()[index]
    flags = _flags(_subparser(command))
    for name in model.model_fields:
        _check_field(command, model, name, flags)
        holder = next((m for m in recipe_models if name in m.model_fields), None)
        assert holder is not None, f"{model.__name__}.{name} is not a field of the recipe"
        ours = model.model_fields[name].get_default(call_default_factory=True)
        theirs = holder.model_fields[name].get_default(call_default_factory=True)
        assert ours == theirs, f"{model.__name__}.{name}: default {ours!r}, recipe {theirs!r}"


def test_a_field_added_to_a_stage_config_appears_as_a_flag_with_its_bounds() -> None:
    from pydantic import Field

    from sq_trt.calibrate.stage import CalibrateConfig
    from sq_trt.commands.common import add_config_args, config_from_args

    class Extended(CalibrateConfig):
        warmup: int = Field(default=2, ge=0, description="warm-up samples")

    parser = argparse.ArgumentParser()
    add_config_args(parser, Extended)
    assert parser.parse_args([]).warmup == 2
    assert config_from_args(Extended, parser.parse_args(["--warmup", "5"])).warmup == 5
    with pytest.raises(ConfigError, match="--warmup"):
        config_from_args(Extended, parser.parse_args(["--warmup", "-1"]))


def test_the_model_and_data_sections_are_the_flags_of_every_command_that_loads_a_model_or_text() -> None:
    from sq_trt.data import DataConfig
    from sq_trt.models.config import ModelConfig
    from sq_trt.pipeline.recipe import Recipe

    assert Recipe.model_fields["model"].annotation is ModelConfig  # one definition, the recipe's section
    assert Recipe.model_fields["data"].annotation is DataConfig
    recipe_only = {name for name in ModelConfig.model_fields if _cli_flag_or_none(ModelConfig, name) is None}
    assert recipe_only == {"offload", "offload_dir"}  # the pipeline's layer streaming; every other field is a flag
    loaders = {"calibrate": True, "smooth": True, "eval": True, "export": False, "compare": False}
    for command, takes_dtype in loaders.items():
        flags = _flags(_subparser(command))
        for name in sorted(set(ModelConfig.model_fields) - recipe_only - ({"dtype"} if not takes_dtype else set())):
            _check_section_flag(command, ModelConfig, name, flags)
        assert ("--dtype" in flags) == takes_dtype
    for command in ("calibrate", "eval", "compare"):
        flags = _flags(_subparser(command))
        for name in DataConfig.model_fields:
            _check_section_flag(command, DataConfig, name, flags)


def _cli_flag_or_none(model: type[Any], name: str) -> str | None:
    from sq_trt.stage_config import cli_flag

    return cli_flag(model, name)


def _check_section_flag(command: str, model: type[Any], name: str, flags: dict[str, argparse.Action]) -> None:
    from sq_trt.commands.common import _dest

    info = model.model_fields[name]
    flag = _cli_flag_or_none(model, name)
    assert flag is not None
    action = flags.get(flag)
    assert action is not None, f"sq-trt {command} has no {flag} for {model.__name__}.{name}"
    assert action.dest == _dest(model, name, "")
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    default = extra["cli_default"] if info.is_required() else info.get_default(call_default_factory=True)
    assert _cli_default(action) == default, f"sq-trt {command} {flag}: {action.default!r} != {default!r}"


def test_the_model_and_data_flags_are_checked_by_the_section_models() -> None:
    from sq_trt.commands.common import data_config_from_args, load_model_from_args

    args = _subparser("calibrate").parse_args(["--calib-fraction", "1.5", "--text-column", "body"])
    with pytest.raises(ConfigError, match=r"--calib-fraction: Input should be less than 1"):
        data_config_from_args(args)
    assert data_config_from_args(_subparser("eval").parse_args(["--text-column", "body"])).text_column == "body"
    with pytest.raises(ConfigError, match="--model: must name a model"):
        load_model_from_args(_subparser("eval").parse_args(["--model", " "]))
    assert _subparser("smooth").parse_args(["--act-scales", "x", "--out", "y"]).model == "demo"
    # The recipe refuses the same value, naming the section's field.
    with pytest.raises(ConfigError, match=r"data.calib_fraction: Input should be less than 1"):
        validate_recipe(_minimal(data={"calib_fraction": 1.5}))


def test_compare_configs_copy_of_the_model_and_data_fields_matches_them() -> None:
    from sq_trt.compare.stage import CompareConfig
    from sq_trt.data import DataConfig
    from sq_trt.models.config import ModelConfig

    fields = CompareConfig.model_fields
    model_source = ModelConfig.model_fields["source"].json_schema_extra
    assert isinstance(model_source, dict) and fields["model"].default == model_source["cli_default"]
    assert fields["device"].default == ModelConfig.model_fields["device"].default
    assert fields["data"].default == DataConfig.model_fields["source"].default
    for name in ("text_column", "calib_fraction"):
        assert fields[name].default == DataConfig.model_fields[name].default
        assert fields[name].metadata == DataConfig.model_fields[name].metadata  # the same bounds


def test_build_flags_are_generated_from_the_build_settings_and_default_to_not_given() -> None:
    from sq_trt.engine.config import BuildOptions, GenerationLimits

    parser = _subparser("build")
    flags = _flags(parser)
    legacy = {
        "--recipe", "--onnx", "--name", "--target", "--engines-dir", "--force", "--backend",
        "--compute-capability", "--batch", "--seq", "--require", "--max-batch", "--max-input",
        "--max-context", "--opt-level", "--workspace-mb", "--timing-cache", "--verbose",
    }  # fmt: skip
    assert legacy <= set(flags)
    for name in ("opt_level", "workspace_mb", "timing_cache", "compute_capabilities"):
        assert flags[_flag_of(BuildOptions, name)[0]].dest == name
    for name in GenerationLimits.model_fields:
        assert flags["--" + name.replace("_", "-")].dest == name
    given = parser.parse_args([])
    assert all(getattr(given, flags[f].dest) is None for f in legacy - {"--force", "--verbose"})
    args = parser.parse_args(
        ["--compute-capability", "8.6", "--compute-capability", "8.9", "--batch", "1,2,4", "--opt-level", "2"]
    )
    assert args.compute_capabilities == ["8.6", "8.9"] and args.batch == (1, 2, 4) and args.opt_level == 2
    assert parser.parse_args(["--backend", "tensorrt_rtx", "--max-input", "16"]).max_input == 16
    with pytest.raises(SystemExit):
        parser.parse_args(["--batch", "1,2"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--backend", "rtx"])
