"""One engine build in a child process, so several can run at once.

TensorRT keeps one logger per loaded library ("use the same logger" for every builder, the
TensorRT developer guide's thread-safety notes), while :func:`~sq_trt.engine.builder.build_engine`
gives each build its own logger to collect that build's errors. Two builds in one process
would mix or drop each other's messages; in two processes each library has its own.

The child is ``python -m sq_trt.engine.isolated``, not ``multiprocessing``: a spawned
``multiprocessing`` child re-runs the caller's main script, which breaks any script without
an ``if __name__ == "__main__"`` guard. It reads the settings as JSON on stdin, prints its
progress lines (relayed live) and ends with one result line; it imports only the engine
code and TensorRT (under a second).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from sq_trt import errors
from sq_trt.engine.builder import Log
from sq_trt.engine.recipe import BuildSettings

RESULT = "sq-trt-isolated-result "


def build_engine_isolated(settings: BuildSettings, backend: str, *, force: bool, log: Log) -> None:
    """:func:`~sq_trt.engine.builder.build_engine` in a child process, its log lines relayed.

    Args:
        settings: Validated build settings (``onnx``, ``name`` and ``target`` set).
        backend: ``tensorrt`` or ``tensorrt_rtx`` (loaded again in the child).
        force: Replace an existing plan of the same target.
        log: Where the child's progress lines go.

    Raises:
        BuildError: The child died without a result (killed, out of memory, a crash in TensorRT).
        SqTrtError: The error the build raised in the child, as the same class.
    """
    request = json.dumps({"settings": _settings_json(settings), "backend": backend, "force": force})
    child = subprocess.Popen(
        [sys.executable, "-m", "sq_trt.engine.isolated"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(request)
    child.stdin.close()
    result: dict[str, Any] | None = None
    for line in child.stdout:
        if line.startswith(RESULT):
            result = json.loads(line.removeprefix(RESULT))
        else:
            log(line.rstrip("\n"))
    code = child.wait()
    if result is None:
        raise errors.BuildError(
            f"the build of {settings.name or settings.onnx} ended without a result (exit code {code}: killed, out "
            "of memory, or a crash inside TensorRT); set build_jobs: 1 in the recipe to build one engine at a time"
        )
    if result.get("error") is not None:
        kind = getattr(errors, result["error"], None)
        raise (kind if isinstance(kind, type) and issubclass(kind, errors.SqTrtError) else errors.BuildError)(
            result["message"]
        )


def _settings_json(settings: BuildSettings) -> dict[str, Any]:
    """The settings as JSON the child validates back into equal settings (checked here, before spawning)."""
    # Generation settings derive their two profiles; giving them back as well is refused.
    data = settings.model_dump(mode="json", exclude={"profiles"} if settings.generation is not None else None)
    if BuildSettings.model_validate(data) != settings:
        raise errors.BuildError(f"the build settings of {settings.name} do not survive a JSON round trip (a bug)")
    return data


def _main() -> int:
    from sq_trt.engine.backends import select_backend
    from sq_trt.engine.builder import build_engine

    request = json.loads(sys.stdin.read())
    try:
        settings = BuildSettings.model_validate(request["settings"])
        loaded, _ = select_backend(request["backend"])
        build_engine(settings, loaded, force=request["force"], log=lambda line: print(line, flush=True))
    except errors.SqTrtError as exc:
        print(RESULT + json.dumps({"error": type(exc).__name__, "message": str(exc)}), flush=True)
        return 1
    print(RESULT + json.dumps({"error": None}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
