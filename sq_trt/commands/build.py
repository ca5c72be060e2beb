"""`sq-trt build`: Build TensorRT / TensorRT-RTX .plan engines from ONNX."""

from __future__ import annotations

import argparse

from sq_trt.commands.common import add_model_args, not_built

HELP = "Build TensorRT / TensorRT-RTX .plan engines from ONNX."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register this subcommand's arguments."""
    add_model_args(parser)


def run(args: argparse.Namespace) -> int:
    """Not built yet: raise a clear error instead of pretending."""
    raise not_built("build", 5)
