"""bench/bench_gemm_plugin.py runs end to end on a CPU (interpreter smoke run) and skips cleanly without a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton", reason="the `kernels` extra (triton) is not installed")

SCRIPT = Path(__file__).resolve().parents[3] / "bench" / "bench_gemm_plugin.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: the script would benchmark it")
def test_without_gpu_it_says_so_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    proc = _run("--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA GPU visible" in proc.stdout and not out.exists()


def test_interpreter_smoke_run_is_labelled_not_gpu(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    proc = _run("--interpret", "--hidden", "32", "--intermediate", "48", "--kv-dim", "16", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["kind"] == "cpu-interpreter smoke run: NOT GPU figures"
    assert "goal" not in result and "engine" not in result  # no GPU claim of any kind
    (row,) = result["layer"]
    assert row["tokens"] == 4 and row["tokens_per_s"]["fused-gemm"] > 0
    assert row["fused_gemm_exact"] is True  # the timed kernel equals the CPU reference
