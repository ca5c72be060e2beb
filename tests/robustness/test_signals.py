"""SIGTERM is handled like Ctrl-C (issue 28, class 7): one line, temporary files removed, exit 143 (130).

A real `sq-trt export` process is signalled at two moments: once it holds its output's lock
(before any write), and once its temporary ``.partial`` directory exists (mid-write). Either way
it must print one line, exit with the documented code and leave nothing next to its output.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .test_concurrency import _child_env

MOMENTS = {"holding-the-lock": ".out.lock", "mid-write": ".out.p*.partial"}
SIGNALS = {
    "SIGTERM": (signal.SIGTERM, 143, "terminated (SIGTERM)"),
    "SIGINT": (signal.SIGINT, 130, "interrupted"),
}


def _wait_for(folder: Path, pattern: str, process: subprocess.Popen[str], timeout: float = 240) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if any(folder.glob(pattern)):
            return True
        time.sleep(0.01)
    return False


@pytest.mark.parametrize("moment", list(MOMENTS))
@pytest.mark.parametrize("name", list(SIGNALS))
def test_a_signal_leaves_one_line_and_nothing_on_disk(tmp_path: Path, name: str, moment: str) -> None:
    number, code, fragment = SIGNALS[name]
    argv = [sys.executable, "-m", "sq_trt", "export", "--model", "tiny:llama", "--out", str(tmp_path / "out")]
    process = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=_child_env()
    )
    try:
        reached = _wait_for(tmp_path, MOMENTS[moment], process)
        assert reached, f"the export never reached {moment} ({process.poll()})"
        time.sleep(0.2 if moment == "holding-the-lock" else 0.0)  # past taking it, into loading the model
        process.send_signal(number)
        assert process.wait(timeout=120) == code
    finally:
        if process.poll() is None:
            process.kill()
    stderr = process.stderr.read() if process.stderr else ""
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr and len(lines) == 1 and fragment in lines[0], stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "the interrupted export left files behind"
