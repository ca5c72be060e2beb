"""Build settings: one validated model, filled from a YAML recipe and then from CLI flags.

A recipe (``builders/<model>.<target>.yaml``) holds any of the fields of
:class:`BuildSettings`; a CLI flag that is given overrides the recipe's value.
Unknown keys are refused, so a misspelled recipe field cannot be silently ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sq_trt.build.profiles import ProfileSpec, RequiredShape
from sq_trt.errors import ConfigError
from sq_trt.yaml_io import read_text_file, safe_load_bounded, short_repr


class GenerationLimits(BaseModel):
    """Shapes of a generation engine (a ``--with-past`` export): its two optimization profiles.

    Attributes:
        max_batch: Sequences decoded together.
        max_input: Longest prompt one prefill step takes.
        max_context: Prompt + generated tokens, at most (the KV cache's length).
    """

    model_config = ConfigDict(extra="forbid")

    max_batch: int = Field(default=1, ge=1, description="sequences per step")
    max_input: int = Field(default=256, ge=1, description="longest prompt of one prefill step")
    max_context: int = Field(default=1024, ge=2, description="prompt + generated tokens (KV cache length)")

    @model_validator(mode="after")
    def _input_fits(self) -> GenerationLimits:
        if self.max_input >= self.max_context:
            raise ValueError(
                f"max_input ({self.max_input}) must be below max_context ({self.max_context}): "
                "decoding needs room after the prompt"
            )
        return self

    def profiles(self) -> list[ProfileSpec]:
        """``prefill`` (1..max_input tokens, past 0..max_context - max_input) and ``decode`` (1 token, past 1..)."""
        prefill_past = self.max_context - self.max_input
        return [
            ProfileSpec(
                name="prefill",
                batch=(1, 1, self.max_batch),
                seq=(1, max(1, self.max_input // 2), self.max_input),
                past=(0, 0, prefill_past),
            ),
            ProfileSpec(
                name="decode",
                batch=(1, 1, self.max_batch),
                seq=(1, 1, 1),
                past=(1, max(1, self.max_context // 2), self.max_context - 1),
            ),
        ]


class BuildSettings(BaseModel):
    """Everything one engine build needs, validated.

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

    model_config = ConfigDict(extra="forbid")

    onnx: Path | None = None
    name: str | None = None
    target: str | None = None
    backend: Literal["tensorrt", "tensorrt_rtx", "auto"] = "auto"
    engines_dir: Path = Path("engines")
    profiles: list[ProfileSpec] = Field(default_factory=lambda: [ProfileSpec()])
    required_shapes: list[RequiredShape] = Field(default_factory=list)
    opt_level: int = Field(default=3, ge=0, le=5)
    workspace_mb: int | None = Field(default=None, ge=1)
    timing_cache: Path | None = None
    compute_capabilities: list[str] = Field(default_factory=list)
    generation: GenerationLimits | None = None

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
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']} (got {short_repr(err.get('input'))})"
        for err in exc.errors()
    )


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
