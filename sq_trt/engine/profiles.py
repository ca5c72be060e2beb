"""Optimization profiles: the min/opt/max shapes an engine accepts, and their validation.

A recipe states profiles the way a user thinks of them, as ranges of batch and
sequence length (``batch: [1, 1, 8]``, ``seq: [1, 128, 512]``), for generation
graphs also the KV cache's length (``past: [0, 0, 0]``, axis 2 of each
``past_key_values.*`` input, which may be 0), optionally with exact per-input shapes. They are resolved against the network's inputs: a
dynamic axis 0 is the batch, a dynamic axis 1 the sequence; any other dynamic
axis needs an explicit per-input shape. Static axes keep their size.

A recipe also lists the shapes later stages need (``required_shapes``, e.g.
the evaluation's batch and sequence length); every one must fall inside some
profile, or the build is refused before any time is spent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sq_trt.errors import ConfigError

Shape = tuple[int, ...]
# KV-cache inputs of a generation graph (sq_trt.models.cache.PAST_KEY): axis 2 is the token axis,
# sized by a profile's ``past`` range.
PAST_PREFIX = "past_key_values."


def _check_range(label: str, values: Sequence[int]) -> tuple[int, int, int]:
    if len(values) != 3:
        raise ValueError(f"{label} must be [min, opt, max], got {list(values)}")
    low, opt, high = (int(v) for v in values)
    if not 1 <= low <= opt <= high:
        raise ValueError(f"{label} must satisfy 1 <= min <= opt <= max, got {list(values)}")
    return low, opt, high


class InputShapes(BaseModel):
    """Exact min/opt/max shapes of one input."""

    model_config = ConfigDict(extra="forbid")

    min: list[int]
    opt: list[int]
    max: list[int]

    @model_validator(mode="after")
    def _ordered(self) -> InputShapes:
        if not len(self.min) == len(self.opt) == len(self.max):
            raise ValueError(f"min/opt/max must have the same rank, got {self.min}, {self.opt}, {self.max}")
        for axis, values in enumerate(zip(self.min, self.opt, self.max, strict=True)):
            _check_range(f"axis {axis}", values)
        return self


class ProfileSpec(BaseModel):
    """One optimization profile as written in a recipe."""

    model_config = ConfigDict(extra="forbid")

    name: str = "default"
    batch: tuple[int, int, int] = Field(
        default=(1, 1, 4), description="batch-size range", json_schema_extra={"metavar": "MIN,OPT,MAX"}
    )
    seq: tuple[int, int, int] = Field(
        default=(1, 128, 512), description="sequence-length range", json_schema_extra={"metavar": "MIN,OPT,MAX"}
    )
    past: tuple[int, int, int] | None = None
    shapes: dict[str, InputShapes] = Field(default_factory=dict)

    @field_validator("batch", "seq")
    @classmethod
    def _range(cls, value: tuple[int, int, int], info: object) -> tuple[int, int, int]:
        return _check_range(getattr(info, "field_name", "range"), value)

    @field_validator("past")
    @classmethod
    def _past_range(cls, value: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
        # A KV cache may be empty (prefill), so its token axis starts at 0, unlike batch and seq.
        if value is not None and not 0 <= value[0] <= value[1] <= value[2]:
            raise ValueError(f"past must satisfy 0 <= min <= opt <= max, got {list(value)}")
        return value


class RequiredShape(BaseModel):
    """A (batch, sequence) shape the engine must accept."""

    model_config = ConfigDict(extra="forbid")

    batch: int = Field(ge=1)
    seq: int = Field(ge=1)


@dataclass(frozen=True)
class ResolvedProfile:
    """A profile resolved against the network: input name -> (min, opt, max) shapes."""

    name: str
    shapes: dict[str, tuple[Shape, Shape, Shape]]

    def accepts(self, shapes: Mapping[str, Shape]) -> bool:
        """Whether every given input shape lies within this profile's [min, max]."""
        for name, shape in shapes.items():
            low, _, high = self.shapes[name]
            if len(shape) != len(low) or any(
                not lo <= s <= hi for s, lo, hi in zip(shape, low, high, strict=True)
            ):
                return False
        return True

    def to_json(self) -> dict[str, object]:
        """JSON form for the engine manifest."""
        return {
            "name": self.name,
            "shapes": {
                n: {"min": list(a), "opt": list(b), "max": list(c)} for n, (a, b, c) in self.shapes.items()
            },
        }


def _axis_value(
    axis: int, size: int, batch: int, seq: int, input_name: str, profile: str, past: int | None = None
) -> int:
    if size >= 0:
        return size
    if axis == 0:
        return batch
    if past is not None and axis == 2 and input_name.startswith(PAST_PREFIX):
        return past
    if axis == 1:
        return seq
    raise ConfigError(
        f"input {input_name!r} has a dynamic axis {axis} that is neither batch (axis 0) nor sequence (axis 1); "
        f"give its exact shapes in profile {profile!r} under `shapes: {{{input_name}: {{min, opt, max}}}}`"
    )


def resolve_profile(spec: ProfileSpec, inputs: Mapping[str, Shape]) -> ResolvedProfile:
    """Resolve one profile against the network's inputs (``-1`` = dynamic axis).

    Args:
        spec: The profile as written.
        inputs: Network input name -> shape with ``-1`` for dynamic axes.

    Returns:
        The min/opt/max shape of every input that has a dynamic axis.

    Raises:
        ConfigError: A ``shapes`` entry names no input, has another rank, or
            changes a static axis; a dynamic axis that cannot be inferred.
    """
    unknown = sorted(set(spec.shapes) - set(inputs))
    if unknown:
        raise ConfigError(
            f"profile {spec.name!r} gives shapes for {unknown}, which are not network inputs "
            f"(inputs: {sorted(inputs)}); fix the names in the recipe"
        )
    resolved: dict[str, tuple[Shape, Shape, Shape]] = {}
    for name, shape in inputs.items():
        if all(size >= 0 for size in shape):
            continue
        if name in spec.shapes:
            given = spec.shapes[name]
            triple = (tuple(given.min), tuple(given.opt), tuple(given.max))
            if len(triple[0]) != len(shape) or any(
                size >= 0 and any(t[axis] != size for t in triple) for axis, size in enumerate(shape)
            ):
                raise ConfigError(
                    f"profile {spec.name!r}: shapes for input {name!r} ({given.min}..{given.max}) do not fit its "
                    f"network shape {list(shape)} (-1 = dynamic); keep the rank and the static sizes"
                )
            resolved[name] = triple
            continue
        pasts: tuple[int | None, ...] = spec.past if spec.past is not None else (None, None, None)
        resolved[name] = tuple(  # type: ignore[assignment]
            tuple(
                _axis_value(axis, size, pick[0], pick[1], name, spec.name, pick[2])
                for axis, size in enumerate(shape)
            )
            for pick in zip(spec.batch, spec.seq, pasts, strict=True)
        )
    return ResolvedProfile(spec.name, resolved)


def resolve_profiles(
    specs: Sequence[ProfileSpec], inputs: Mapping[str, Shape], required: Sequence[RequiredShape] = ()
) -> list[ResolvedProfile]:
    """Resolve every profile and check that each required shape fits one of them.

    Raises:
        ConfigError: Duplicate profile names, or a required shape outside every profile.
    """
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"profile names must be unique, got {names}")
    if not specs:
        raise ConfigError("no optimization profile given; a recipe needs at least one under `profiles:`")
    profiles = [resolve_profile(spec, inputs) for spec in specs]
    for need in required:
        concrete = {
            name: tuple(
                size if size >= 0 else (need.batch if axis == 0 else need.seq)
                for axis, size in enumerate(shape)
            )
            for name, shape in inputs.items()
            if any(size < 0 for size in shape)
        }
        if concrete and not any(profile.accepts(concrete) for profile in profiles):
            ranges = "; ".join(f"{s.name}: batch {list(s.batch)}, seq {list(s.seq)}" for s in specs)
            raise ConfigError(
                f"required shape batch={need.batch}, seq={need.seq} lies outside every profile ({ranges}); "
                "widen a profile's [min, max] or drop the shape from `required_shapes`"
            )
    return profiles
