"""`sq-trt export`: Export model.fp16.onnx and model.int8.onnx (explicit Q/DQ, per-tensor or per-token)."""

from __future__ import annotations

import argparse

from sq_trt.commands.common import add_model_args, not_built

HELP = "Export model.fp16.onnx and model.int8.onnx (explicit Q/DQ, per-tensor or per-token)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register this subcommand's arguments."""
    add_model_args(parser)


def run(args: argparse.Namespace) -> int:
    """Not built yet: raise a clear error instead of pretending."""
    raise not_built("export", 4)
