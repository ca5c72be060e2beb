"""`sq-trt export-triton`: Write a Triton Inference Server model repository for a built engine."""

from __future__ import annotations

import argparse

from sq_trt.commands.common import add_model_args, not_built

HELP = "Write a Triton Inference Server model repository for a built engine."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register this subcommand's arguments."""
    add_model_args(parser)


def run(args: argparse.Namespace) -> int:
    """Not built yet: raise a clear error instead of pretending."""
    raise not_built("export-triton", 5)
