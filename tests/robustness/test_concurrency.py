"""One writer per output (issue 28, class 3): two writers of one artifact never both publish.

Writers are real processes (``flock`` locks belong to processes), each running
:func:`sq_trt.artifacts.artifact_dir` as every stage does, released together at a wall-clock
instant after their imports. Whatever the timing: at least one succeeds, a refused one says
why in one line, the published artifact verifies against its manifest and is exactly one
successful writer's, and nothing is left beside it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sq_trt.artifacts import load_manifest

from .cases import TINY

# argv: out, payload, force (0/1), start (unix time), hold seconds, [marker file, release file]
_WRITER = """
import sys, time
from pathlib import Path
from sq_trt.artifacts import artifact_dir
from sq_trt.errors import ArtifactError
out, payload, force, start, hold = sys.argv[1], sys.argv[2], sys.argv[3] == "1", float(sys.argv[4]), float(sys.argv[5])
marker = Path(sys.argv[6]) if len(sys.argv) > 6 else None
time.sleep(max(0.0, start - time.time()))
try:
    with artifact_dir(out, stage="race", force=force) as tmp:
        (tmp / "payload.txt").write_text(payload)
        if marker is not None:
            marker.write_text("in")
            release = Path(sys.argv[7])
            while not release.exists():
                time.sleep(0.02)
        time.sleep(hold)
except ArtifactError as exc:
    print(exc, file=sys.stderr)
    sys.exit(1)
"""


def _start(
    out: Path, payload: str, force: bool, start: float, hold: float, *extra: Path
) -> subprocess.Popen[str]:
    argv = [sys.executable, "-c", _WRITER, str(out), payload, "1" if force else "0", str(start), str(hold)]
    return subprocess.Popen(
        [*argv, *map(str, extra)], stderr=subprocess.PIPE, text=True, cwd=out.parent, env=_child_env()
    )


def _child_env() -> dict[str, str]:
    """The environment with the sq_trt this process imported first on the path (a worktree's venv may not map it)."""
    import os

    import sq_trt

    source = str(Path(sq_trt.__file__).resolve().parent.parent)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}


def _published(out: Path) -> str:
    manifest = load_manifest(out, stage="race", verify_files=True)
    assert set(manifest.files) == {"payload.txt"}
    return (out / "payload.txt").read_text()


def _refusal_ok(stderr: str) -> bool:
    lines = stderr.strip().splitlines()
    return len(lines) == 1 and (
        "being written by another sq-trt process" in lines[0] or "already exists" in lines[0]
    )


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], database=None
)
@given(
    delays=st.tuples(st.floats(0, 0.3), st.floats(0, 0.3)),
    holds=st.tuples(st.floats(0, 0.4), st.floats(0, 0.4)),
    forces=st.tuples(st.booleans(), st.booleans()),
)
def test_two_concurrent_writers_one_result(tmp_path_factory, delays, holds, forces) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("race")
    out = root / "artifact"
    start = time.time() + 1.0  # after both interpreters have imported sq_trt
    writers = [_start(out, f"writer-{i}", forces[i], start + delays[i], holds[i]) for i in (0, 1)]
    results = [(w.wait(timeout=60), w.stderr.read() if w.stderr else "") for w in writers]
    won = [f"writer-{i}" for i, (code, _) in enumerate(results) if code == 0]
    assert won, results
    assert all(code in (0, 1) for code, _ in results), results
    assert all(_refusal_ok(err) for code, err in results if code == 1), results
    if not any(forces):
        assert len(won) == 1, f"both writers published {out} without --force: {results}"
    assert _published(out) in won
    assert sorted(p.name for p in root.iterdir()) == ["artifact"], "a lock or temporary file was left behind"


def test_a_writer_holding_the_output_refuses_a_forced_second(tmp_path: Path) -> None:
    """--force replaces a finished result, never one another writer is producing."""
    out, marker, release = tmp_path / "artifact", tmp_path / "in", tmp_path / "go"
    first = _start(out, "first", True, 0.0, 0.0, marker, release)
    deadline = time.time() + 60
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.02)
    assert marker.exists(), "the first writer never started"
    second = _start(out, "second", True, 0.0, 0.0)
    code = second.wait(timeout=60)
    release.write_text("")
    assert first.wait(timeout=60) == 0
    assert code == 1 and second.stderr is not None and _refusal_ok(second.stderr.read())
    assert _published(out) == "first"


def test_a_result_published_meanwhile_is_never_replaced(tmp_path: Path) -> None:
    """A writer that ignores the lock and publishes first keeps its result; ours is dropped with one line."""
    from sq_trt.artifacts import artifact_dir
    from sq_trt.errors import ArtifactError

    out = tmp_path / "artifact"
    try:
        with artifact_dir(out, stage="race", force=False) as tmp:
            (tmp / "payload.txt").write_text("ours")
            out.mkdir()
            (out / "theirs.txt").write_text("theirs")
    except ArtifactError as exc:
        assert "appeared while this stage ran" in str(exc)
    else:
        raise AssertionError("the final rename replaced a result another writer published")
    assert sorted(p.name for p in out.iterdir()) == ["theirs.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact"]


def test_two_cli_writers_to_one_out(tmp_path: Path) -> None:
    """Two real `sq-trt calibrate` runs to one --out: exactly one exits 0, the other one line and 1."""
    out = tmp_path / "scales"
    argv = [
        sys.executable,
        "-m",
        "sq_trt",
        "calibrate",
        *TINY,
        "--samples",
        "1",
        "--seq-len",
        "16",
        "--out",
        str(out),
    ]
    runs = [
        subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=_child_env()
        )
        for _ in range(2)
    ]
    results = sorted((run.wait(timeout=300), run.stderr.read() if run.stderr else "") for run in runs)
    assert [code for code, _ in results] == [0, 1], results
    assert "Traceback" not in results[1][1] and _refusal_ok(
        results[1][1].replace("sq-trt calibrate: error: ", "")
    )
    load_manifest(out, stage="calibrate", verify_files=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scales"]
