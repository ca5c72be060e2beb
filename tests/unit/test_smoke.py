"""docker/smoke.sh: lint-clean, and its logic up to the first TensorRT call runs here for real.

On a GPU host the same script goes on to build, run and reload the three engines (the GPU test
below); here ``SQ_TRT_SMOKE_UNTIL=export`` stops it before TensorRT, after the real calibrate and
exports of the tiny Llama that the GPU part consumes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from sq_trt.engine.gpu import visible_gpus
from sq_trt.export.lint import find_qdq_problems
from sq_trt.hosttools.smoke import ENCODINGS, relative_error

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "docker" / "smoke.sh"


def _run(out: Path, until: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SQ_TRT_SMOKE_UNTIL": until, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        ["bash", str(SCRIPT), str(out)],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_script_parses_and_is_shellcheck_clean() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    result = subprocess.run(
        ["shellcheck", "-S", "style", str(SCRIPT)], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


def test_unknown_stop_point_is_refused(tmp_path: Path) -> None:
    result = _run(tmp_path, "build")
    assert result.returncode == 2 and "must be 'all' or 'export'" in result.stderr


def test_relative_error() -> None:
    assert relative_error([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert relative_error([3.0, 4.0], [3.0, 4.5]) == pytest.approx(0.1)
    assert relative_error([1.0], [1.0, 2.0]) == float("inf")


def test_cpu_part_exports_the_three_graphs_the_gpu_part_builds(tmp_path: Path) -> None:
    result = _run(tmp_path, "export")
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert not [line for line in lines if line.startswith("FAIL")], lines
    assert any(line.startswith("INFO tensorrt") for line in lines)  # no TensorRT here: context, not a failure
    assert any(line.startswith("PASS calibrate tiny:llama") for line in lines)
    for encoding in ENCODINGS:
        assert any(line.startswith(f"PASS export {encoding} ") for line in lines), lines
        model = onnx.load(str(tmp_path / "work" / encoding / "model.int8.onnx"), load_external_data=False)
        assert find_qdq_problems(model) == []
    assert lines[-1] == "STOP before the first TensorRT call (SQ_TRT_SMOKE_UNTIL=export)"
    plugin = onnx.load(str(tmp_path / "work" / "plugin" / "model.int8.onnx"), load_external_data=False)
    assert any(node.domain == "sq_trt" for node in plugin.graph.node)
    portable = onnx.load(str(tmp_path / "work" / "portable" / "model.int8.onnx"), load_external_data=False)
    assert not any(node.domain == "sq_trt" for node in portable.graph.node)


@pytest.mark.gpu
def test_whole_smoke_run_passes_on_a_gpu_host(tmp_path: Path) -> None:
    pytest.importorskip(
        "tensorrt", reason="TensorRT proper (GPU hosts / NVIDIA's container) is not installed"
    )
    if not visible_gpus():
        pytest.skip("the smoke checks build and run engines on an NVIDIA GPU; none is visible")
    result = _run(tmp_path, "all", timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    passes = [line for line in result.stdout.splitlines() if line.startswith("PASS")]
    assert len(passes) == 3 + 4 + 1 + 2 * len(ENCODINGS)  # env, calibrate + exports, build, agree/load
