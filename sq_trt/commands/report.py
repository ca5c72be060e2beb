"""`sq-trt report`: Write the HTML/Markdown/JSON accuracy report from compare results."""

from __future__ import annotations

import argparse

from sq_trt.commands.common import add_model_args, not_built

HELP = "Write the HTML/Markdown/JSON accuracy report from compare results."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register this subcommand's arguments."""
    add_model_args(parser)


def run(args: argparse.Namespace) -> int:
    """Not built yet: raise a clear error instead of pretending."""
    raise not_built("report", 6)
