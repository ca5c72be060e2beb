"""Build settings: one validated model, filled from a YAML recipe and then from CLI flags.

A recipe (``builders/<model>.<target>.yaml``) holds any of the fields of
:class:`BuildSettings`; a CLI flag that is given overrides the recipe's value.
Unknown keys are refused, so a misspelled recipe field cannot be silently ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from sq_trt.engine.config import BuildOptions, GenerationLimits
from sq_trt.engine.profiles import RequiredShape
from sq_trt.errors import ConfigError
from sq_trt.stage_config import format_errors
from sq_trt.yaml_io import read_text_file, safe_load_bounded


class BuildSettings(BuildOptions):
    """Everything one engine build needs, validated: the shared :class:`BuildOptions` and what it names.

    Attributes:
        onnx: The source ONNX file.
        name: Engine directory name under ``engines_dir`` (e.g. ``smollm2-135m-int8``).
        target: File stem of the ``.plan`` inside it (e.g. ``rtx``, ``h100``).
        backend: ``tensorrt``, ``tensorrt_rtx`` or ``auto``.
        engines_dir: Parent of the engine directories.
        profiles: Optimization profiles (batch/sequence ranges or exact shapes).
        required_shapes: Shapes later stages need; each must fit a profile.
        opt_level: Builder optimization level (0-5; TensorRT's default is 3).
        workspace_mb: Workspace memory-pool limit in MiB (None = TensorRT's default, the GPU's memory).
        timing_cache: Timing cache file to load and update (TensorRT proper only).
        compute_capabilities: GPU targets of a TensorRT-RTX engine, e.g. ``["8.6", "8.9"]``
            (empty = TensorRT-RTX's default set).
        generation: For a generation graph: max batch / input / context; replaces ``profiles``
            with the ``prefill`` and ``decode`` profiles (:meth:`GenerationLimits.profiles`).
    """

    # The generation validator below assigns `profiles`; validating that assignment would rerun it.
    model_config = ConfigDict(extra="forbid", validate_assignment=False)

    onnx: Path | None = Field(
        default=None, description="ONNX file to build (e.g. the export stage's model.int8.onnx)"
    )
    name: str | None = Field(
        default=None, description="engine directory name under --engines-dir (e.g. smollm2-135m-int8)"
    )
    target: str | None = Field(default=None, description="engine file stem inside it (e.g. rtx, h100): <target>.plan")
    backend: Literal["tensorrt", "tensorrt_rtx", "auto"] = Field(
        default="auto",
        description="TensorRT flavour: auto (tensorrt when importable with a GPU visible, else tensorrt_rtx)",
    )
    engines_dir: Path = Field(default=Path("engines"), description="parent of the engine directories")
    required_shapes: list[RequiredShape] = Field(
        default_factory=list,
        description="shapes later stages need; the build is refused if no profile covers one",
        json_schema_extra={"cli": "--require", "cli_form": "BATCHxSEQ"},
    )

    @model_validator(mode="after")
    def _generation_profiles(self) -> BuildSettings:
        if self.generation is not None:
            if "profiles" in self.model_fields_set:
                raise ValueError(
                    "give either `generation` (its two profiles are derived) or `profiles`, not both"
                )
            self.profiles = self.generation.profiles()
        return self

    @field_validator("name", "target")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        if value is not None and (not value or "/" in value or value.startswith(".")):
            raise ValueError(f"must be a plain file name (no '/', not starting with '.'), got {value!r}")
        return value


def _format_validation(exc: ValidationError) -> str:
    # The pipeline recipe's formatter: the same "did you mean" for a misspelled field.
    return "; ".join(format_errors(exc, BuildSettings, root_label="<root>"))


__all__ = ["BuildOptions", "BuildSettings", "GenerationLimits", "load_recipe", "resolve_settings"]


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Read a YAML recipe into a plain mapping (validated later, merged with the flags).

    Relative paths inside the recipe (``onnx``, ``timing_cache``, ``engines_dir``)
    stay relative to the working directory, like the flags they stand for.

    Raises:
        ConfigError: Missing file, invalid YAML, or not a mapping.
    """
    recipe = Path(path)
    if not recipe.is_file():
        raise ConfigError(f"recipe {recipe} does not exist; see builders/README.md for the recipes shipped")
    data = safe_load_bounded(read_text_file(recipe, "recipe"), f"recipe {recipe}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"recipe {recipe} holds a {type(data).__name__}; expected a mapping of build settings"
        )
    if data.get("kind") == "pipeline":
        raise ConfigError(
            f"{recipe} is a pipeline recipe (kind: pipeline); run it with `sq-trt pipeline --recipe {recipe}`, "
            "or pass a build recipe such as builders/smollm2-135m.rtx.yaml"
        )
    return data


def resolve_settings(
    recipe: Mapping[str, Any], overrides: Mapping[str, Any], *, source: str
) -> BuildSettings:
    """Merge a recipe with CLI overrides (None = not given) and validate.

    Args:
        recipe: The recipe's mapping (may be empty).
        overrides: Flag values; None means the flag was not given.
        source: Where the recipe came from, for messages.

    Raises:
        ConfigError: A field is unknown or invalid (message names each one).
    """
    merged = dict(recipe)
    merged.update({key: value for key, value in overrides.items() if value is not None})
    try:
        return BuildSettings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(f"invalid build settings from {source}: {_format_validation(exc)}") from exc
