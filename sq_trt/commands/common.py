"""Reusable argument groups shared by the subcommands (Polygraphy-style)."""

from __future__ import annotations

import argparse
from typing import Any


def add_model_args(parser: argparse.ArgumentParser, *, dtype: bool = True) -> None:
    """``--model`` and its loading switches: the fields of :class:`sq_trt.models.config.ModelConfig`.

    ``dtype=False``: for a command that loads in float32 whatever the flag (export, compare).
    """
    from sq_trt.models.config import ModelConfig

    fields = tuple(name for name in ModelConfig.model_fields if dtype or name != "dtype")
    add_config_args(parser.add_argument_group("model"), ModelConfig, fields)


def load_model_from_args(args: argparse.Namespace) -> Any:
    """Load the model named by the :func:`add_model_args` flags (``--model``, ``--device``...).

    Raises:
        ConfigError: A flag value :class:`~sq_trt.models.config.ModelConfig` refuses.
    """
    from sq_trt.artifacts import verify_model_dir
    from sq_trt.models.config import ModelConfig
    from sq_trt.models.loading import load_model

    config = config_from_args(ModelConfig, args)
    verify_model_dir(config.source)
    return load_model(
        config.source,
        dtype=config.dtype,
        local_files_only=config.local_files_only,
        trust_remote_code=config.trust_remote_code,
        device=config.device,
    )


def add_data_args(
    parser: argparse.ArgumentParser, *, seq_len: int = 512, samples: int = 32, sizes: bool = True
) -> None:
    """``--data``, ``--text-column``, ``--calib-fraction`` (:class:`sq_trt.data.DataConfig`), and chunk sizes.

    ``sizes=False``: the command's stage config adds ``--seq-len`` / ``--samples``.
    """
    from sq_trt.data import DataConfig

    group = parser.add_argument_group("data")
    add_config_args(group, DataConfig)
    if sizes:
        group.add_argument("--seq-len", type=int, default=seq_len, help=f"tokens per sample (default {seq_len})")
        group.add_argument("--samples", type=int, default=samples, help=f"number of samples (default {samples})")


def data_config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`sq_trt.data.DataConfig` of the :func:`add_data_args` flags.

    Raises:
        ConfigError: A value it refuses (``--calib-fraction 1.5``), naming the flag.
    """
    from sq_trt.data import DataConfig

    return config_from_args(DataConfig, args)


class _CommaInts:
    """argparse ``type=`` for ``1,8,16``: exactly ``count`` integers."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.__name__ = f"{count} comma-separated integers"

    def __call__(self, text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(v) for v in text.split(","))
        except ValueError:
            values = ()
        if len(values) != self.count:
            raise argparse.ArgumentTypeError(
                f"expected {self.count} comma-separated integers (e.g. 1,8,16), got {text!r}"
            )
        return values


def _flag_kwargs(info: Any) -> dict[str, Any]:
    """argparse keywords for one pydantic field: type, choices, nargs or a switch, from its annotation."""
    import types
    import typing
    from pathlib import Path

    annotation = info.annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        # `X | None`: the flag takes an X; leaving it out keeps the default (None).
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if annotation is bool:
        return {"action": "store_false" if info.default else "store_true"}
    if origin is typing.Literal:
        choices = typing.get_args(annotation)
        normalize = None
        if any(isinstance(c, str) and c.startswith("per_") for c in choices):  # act modes (hybrid too)
            from sq_trt.stage_config import normalize_act_mode

            normalize = normalize_act_mode  # per-token is accepted as well as per_token
        return {"choices": choices, **({"type": normalize} if normalize else {})}
    items = typing.get_args(annotation)
    if origin is tuple and items and all(item is int for item in items):
        # A fixed-length range (a profile's batch: MIN,OPT,MAX) is one comma-separated value.
        return {"type": _CommaInts(len(items)), "metavar": ",".join(["N"] * len(items))}
    if origin in (tuple, list):
        return {"nargs": "+", "metavar": "VALUE"}
    if annotation in (int, float, str, Path):
        return {"type": annotation}
    raise TypeError(f"no command-line form for a field of type {annotation!r}")  # a new field type: add it here


def add_config_args(
    group: Any, model: Any, fields: tuple[str, ...] | None = None, *, prefix: str = "", unset: bool = False
) -> None:
    """Add one flag per field of a stage config (:class:`sq_trt.stage_config.StageConfig`).

    The flag, help text, default, type and choices all come from the field, so an
    option added to a stage config appears on the command line and in the recipe
    with the same default (``tests/unit/test_stage_configs.py`` checks every field).

    Args:
        group: The parser or argument group.
        model: The config class.
        fields: The fields to add (default: all of them).
        prefix: For a nested config: ``search`` makes ``--search-samples`` with dest ``search_samples``.
        unset: Flags merged over a recipe (``sq-trt build``): every flag defaults to None ("not
            given", so the recipe's value stands) and a list flag is repeatable.
    """
    from sq_trt.stage_config import cli_flag

    for name in fields or tuple(model.model_fields):
        info = model.model_fields[name]
        flag = cli_flag(model, name)
        if flag is None:
            continue
        if prefix:
            flag = f"--{prefix}-{flag.removeprefix('--')}"
        kwargs = _flag_kwargs(info)
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if "metavar" in extra:
            kwargs["metavar"] = extra["metavar"]
        # A field a recipe must give (model.source) may still default on the command line (--model demo).
        default = extra.get("cli_default") if info.is_required() else info.get_default(call_default_factory=True)
        if default is None and info.is_required():
            kwargs["required"] = True
        if kwargs.get("action") == "store_false":
            flag = "--no-" + flag.removeprefix("--")
        elif not kwargs.get("action"):
            kwargs["default"] = list(default) if isinstance(default, tuple) else default
        if unset:
            kwargs["default"] = None
            if kwargs.get("nargs") == "+":
                kwargs["action"] = "extend"  # --compute-capability 8.6 --compute-capability 8.9
        help_text = info.description or name
        shows_default = "action" not in kwargs or (kwargs["action"] == "extend" and default)
        if shows_default and default is not None:
            help_text += f" (default {default if not isinstance(default, tuple) else list(default)})"
        group.add_argument(flag, dest=_dest(model, name, prefix), help=help_text, **kwargs)


def _dest(model: Any, name: str, prefix: str) -> str:
    """Where argparse stores a field: ``<prefix>_<name>``, or the field's ``dest`` extra (``--model`` -> ``model``)."""
    extra = model.model_fields[name].json_schema_extra
    base = str(extra["dest"]) if isinstance(extra, dict) and "dest" in extra else name
    return f"{prefix}_{base}" if prefix else base


def config_values(model: Any, args: argparse.Namespace, *, prefix: str = "") -> dict[str, Any]:
    """The field values :func:`add_config_args` parsed (by the same ``prefix``)."""
    dests = {name: _dest(model, name, prefix) for name in model.model_fields}
    return {name: getattr(args, dest) for name, dest in dests.items() if hasattr(args, dest)}


def config_from_args(model: Any, args: argparse.Namespace, **extra: Any) -> Any:
    """The stage config from the flags :func:`add_config_args` added (and ``extra`` values).

    Raises:
        ConfigError: A value the config refuses, naming the field.
    """
    from sq_trt.stage_config import cli_flag

    values = {**config_values(model, args), **extra}
    labels = {name: cli_flag(model, name) or name for name in values}
    return model.create(labels=labels, **values)
