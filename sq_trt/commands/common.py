"""Reusable argument groups shared by the subcommands (Polygraphy-style)."""

from __future__ import annotations

import argparse
from typing import Any


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """``--model`` and its loading switches."""
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        default="demo",
        help="hub id | local directory | .gguf file | 'demo' (SmolLM2-135M, default) | 'tiny:<family>'",
    )
    group.add_argument(
        "--local-files-only", action="store_true", help="never download; use only files already on disk"
    )
    group.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow the model's own Python code to run (off by default; only for models you trust)",
    )
    group.add_argument("--device", default="cpu", help="torch device for calibration/evaluation (cpu, cuda)")


def load_model_from_args(args: argparse.Namespace) -> Any:
    """Load the model named by the :func:`add_model_args` flags (``--model``, ``--device``...)."""
    from sq_trt.models.loading import load_model

    return load_model(
        args.model,
        local_files_only=args.local_files_only,
        trust_remote_code=args.trust_remote_code,
        device=args.device,
    )


def add_data_args(
    parser: argparse.ArgumentParser, *, seq_len: int = 512, samples: int = 32, sizes: bool = True
) -> None:
    """``--data`` and how it is cut into chunks (``sizes=False``: the stage config adds those flags)."""
    group = parser.add_argument_group("data")
    group.add_argument(
        "--data",
        default="embedded",
        help="'embedded' (CPython's pydoc text, default), a .txt/.json/.jsonl/.parquet file, "
        "or 'hub:<dataset>[:<config>][@<split>]'",
    )
    group.add_argument(
        "--text-column", default="text", help="field holding the text in json/parquet/hub data"
    )
    if sizes:
        group.add_argument("--seq-len", type=int, default=seq_len, help=f"tokens per sample (default {seq_len})")
        group.add_argument("--samples", type=int, default=samples, help=f"number of samples (default {samples})")
    group.add_argument(
        "--calib-fraction",
        type=float,
        default=0.5,
        help="fraction of the text used for calibration; evaluation uses the rest (default 0.5)",
    )



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
        if all(isinstance(c, str) and c.startswith("per_") for c in choices):
            from sq_trt.stage_config import normalize_act_mode

            normalize = normalize_act_mode  # per-token is accepted as well as per_token
        return {"choices": choices, **({"type": normalize} if normalize else {})}
    if origin in (tuple, list):
        return {"nargs": "+", "metavar": "VALUE"}
    if annotation in (int, float, str, Path):
        return {"type": annotation}
    raise TypeError(f"no command-line form for a field of type {annotation!r}")  # a new field type: add it here


def add_config_args(group: Any, model: Any, fields: tuple[str, ...] | None = None, *, prefix: str = "") -> None:
    """Add one flag per field of a stage config (:class:`sq_trt.stage_config.StageConfig`).

    The flag, help text, default, type and choices all come from the field, so an
    option added to a stage config appears on the command line and in the recipe
    with the same default (``tests/unit/test_stage_configs.py`` checks every field).

    Args:
        group: The parser or argument group.
        model: The config class.
        fields: The fields to add (default: all of them).
        prefix: For a nested config: ``search`` makes ``--search-samples`` with dest ``search_samples``.
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
        default = info.get_default(call_default_factory=True)
        if kwargs.get("action") == "store_false":
            flag = "--no-" + flag.removeprefix("--")
        elif not kwargs.get("action"):
            kwargs["default"] = list(default) if isinstance(default, tuple) else default
        help_text = info.description or name
        if "action" not in kwargs and default is not None:
            help_text += f" (default {default if not isinstance(default, tuple) else list(default)})"
        group.add_argument(flag, dest=f"{prefix}_{name}" if prefix else name, help=help_text, **kwargs)


def config_values(model: Any, args: argparse.Namespace, *, prefix: str = "") -> dict[str, Any]:
    """The field values :func:`add_config_args` parsed (by the same ``prefix``)."""
    dest = (lambda name: f"{prefix}_{name}") if prefix else (lambda name: name)
    return {name: getattr(args, dest(name)) for name in model.model_fields if hasattr(args, dest(name))}


def config_from_args(model: Any, args: argparse.Namespace, **extra: Any) -> Any:
    """The stage config from the flags :func:`add_config_args` added (and ``extra`` values).

    Raises:
        ConfigError: A value the config refuses, naming the field.
    """
    from sq_trt.stage_config import cli_flag

    values = {**config_values(model, args), **extra}
    labels = {name: cli_flag(model, name) or name for name in values}
    return model.create(labels=labels, **values)
