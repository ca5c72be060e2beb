"""Errors and subprocess helper shared by the TensorRT API harness modules."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence


class HarnessUnavailable(RuntimeError):
    """The harness cannot be prepared here (no network, no compiler, ...); tests skip with this reason."""


class HarnessError(RuntimeError):
    """A wheel or generated stub is not what the harness expects: a failure, never a skip."""


def run_tool(cmd: Sequence[str], **kwargs: object) -> str:
    """Run a command and return its stdout.

    Raises:
        HarnessUnavailable: The command is missing or exits non-zero (the message carries its output).
    """
    try:
        proc = subprocess.run(list(cmd), check=False, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    except FileNotFoundError as exc:
        raise HarnessUnavailable(f"`{cmd[0]}` is not installed: {exc}") from exc
    if proc.returncode != 0:
        raise HarnessUnavailable(
            f"`{' '.join(cmd)}` exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-800:]}"
        )
    return str(proc.stdout)
