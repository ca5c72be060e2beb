"""The base of every stage's configuration: one pydantic model per stage, shared by the CLI and the recipe.

A stage config (:class:`StageConfig`) is defined once, next to its stage. The
pipeline recipe composes the same models as its sections, and the subcommands
name each field's flag in the field itself (``json_schema_extra={"cli": ...}``,
else ``--field-name``), so ``tests/unit/test_stage_configs.py`` can check that
every field is reachable from both. Constructing a config with a bad value
raises :class:`~sq_trt.errors.ConfigError` naming the field, exactly as the
recipe loader does, through the one formatter :func:`format_errors`.

Values with two historical spellings (``per-token`` / ``per_token``) are written
one way (underscores, as in the recipes) and accepted either way everywhere
(:data:`ActMode`).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from sq_trt.errors import ConfigError
from sq_trt.yaml_io import short_repr


def _underscored(value: Any) -> Any:
    # `per-token` was the export flag's spelling; every other place wrote `per_token`.
    return value.replace("-", "_") if isinstance(value, str) and value.startswith("per-") else value


ActMode = Annotated[Literal["per_token", "per_tensor"], BeforeValidator(_underscored)]
"""Activation quantization: ``per_token`` (dynamic) or ``per_tensor`` (static); ``per-token`` is accepted too."""

ACT_MODE_CHOICES: tuple[str, ...] = ("per_token", "per_tensor")

PlanActMode = Annotated[Literal["per_token", "per_tensor", "hybrid"], BeforeValidator(_underscored)]
"""A candidate's activation mode: every linear :data:`ActMode`, or ``hybrid`` (a measured per-linear plan)."""

PLAN_ACT_MODE_CHOICES: tuple[str, ...] = ("per_token", "per_tensor", "hybrid")


def normalize_act_mode(value: str) -> str:
    """``per-token`` -> ``per_token`` (argparse ``type=`` for act-mode flags)."""
    result: str = _underscored(value)
    return result


class StageConfig(BaseModel):
    """A stage's settings: unknown fields refused, every value checked on construction and assignment.

    The constructor raises pydantic's ``ValidationError`` (so a recipe section nests it and
    reports the full path); :meth:`create` is the user-facing constructor that turns it into
    a :class:`~sq_trt.errors.ConfigError`.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @classmethod
    def create(cls, *, labels: dict[str, str] | None = None, **data: Any) -> Self:
        """Construct from user values (CLI flags, an API call).

        Args:
            labels: What to call a field in messages (its flag, ``--samples``).
            **data: The field values.

        Raises:
            ConfigError: One line per invalid field.
        """
        try:
            return cls(**data)
        except ValidationError as exc:
            lines = format_errors(exc, cls, labels=labels)
            raise ConfigError(f"invalid {cls.__name__}: " + "; ".join(lines)) from None


def cli_flag(model: type[BaseModel], name: str) -> str | None:
    """The command-line flag of a config field: its ``cli`` extra, else ``--field-name``."""
    extra = model.model_fields[name].json_schema_extra
    if isinstance(extra, dict) and "cli" in extra:
        flag = extra["cli"]
        return str(flag) if flag is not None else None
    return "--" + name.replace("_", "-")


def model_fields_at(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """Field names valid at ``loc`` inside ``model`` (for "did you mean" on unknown fields)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if (
            not (isinstance(current, type) and issubclass(current, BaseModel))
            or part not in current.model_fields
        ):
            return []
        annotation = current.model_fields[part].annotation
        args = getattr(annotation, "__args__", ())
        current = next(
            (a for a in (annotation, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None
        )
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def format_errors(
    exc: ValidationError,
    root: type[BaseModel],
    *,
    missing_hint: dict[str, str] | None = None,
    root_label: str = "<config>",
    labels: dict[str, str] | None = None,
) -> list[str]:
    """One line per error: ``section.field: what is wrong (got X)``, with a hint for unknown fields.

    Args:
        exc: The validation error.
        root: The model validated (to list the known fields where an unknown one was given).
        missing_hint: Extra text for a missing field, keyed by its dotted path.
        root_label: What names an error of the whole model (empty: the message alone).
        labels: Names for top-level fields (their command-line flags).
    """
    lines = []
    for err in exc.errors():
        loc = list(err["loc"])
        shown = [(labels or {}).get(str(loc[0]), loc[0]), *loc[1:]] if loc else []
        where = ".".join(str(p) for p in shown) or root_label
        if err["type"] == "extra_forbidden":
            known = model_fields_at(root, loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f"; did you mean `{close[0]}`?" if close else ""
            lines.append(f"{where}: unknown field{hint} (known fields here: {', '.join(known)})")
        elif err["type"] == "missing":
            hint = (missing_hint or {}).get(where, "")
            lines.append(f"{where}: required field is missing{hint}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            value = err.get("input")
            got = "" if "got " in msg or isinstance(value, dict) else f" (got {short_repr(value)})"
            lines.append(f"{where}: {msg}{got}" if where else f"{msg}{got}")
    return lines
