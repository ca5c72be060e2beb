"""bench/gpu_ptx_check.py: the export half runs here; the GPU half says why it cannot, and exits 0."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton", reason="the `kernels` extra (triton) is not installed")

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "bench" / "gpu_ptx_check.py"


def _run(*args: str, code: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", code] if code else [sys.executable, str(SCRIPT), *args]
    return subprocess.run(
        command, check=False, capture_output=True, text=True, timeout=600, env={**os.environ, **env}
    )  # fmt: skip


def test_export_writes_the_aligned_aot_ptx_of_every_gemm_tactic(tmp_path: Path) -> None:
    from sq_trt.plugins import gemm

    out = tmp_path / "ptx"
    proc = _run("--export", str(out), "--arch", "sm_90", SQ_TRT_CACHE=str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr
    records = json.loads((out / "ptx.json").read_text())
    assert len(records) == 2 * len(gemm.TILE_CONFIGS)
    for rec in records:
        ptx = (out / rec["file"]).read_text()
        # The very PTX aot_impl returns for an aligned weight: hinted, cp.async, no byte loads, sm_90a.
        assert rec["divisibility"]["K"] == 16 and rec["divisibility"]["N"] == 8, rec
        assert re.search(r"^\.target sm_90a", ptx, re.MULTILINE) and f".entry {rec['kernel']}" in ptx
        assert "cp.async" in ptx and not re.search(r"ld\.global\S*\.[sub]8\s", ptx), rec["file"]
        _, same, _ = gemm.compile_variant(
            "w8a8_gemm_kernel" if rec["plugin"] == "W8A8Gemm" else "quant_w8a8_gemm_kernel", rec["tactic"], 90
        )
        assert same == ptx


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: the script would run on it")
def test_check_without_gpu_says_so(tmp_path: Path) -> None:
    proc = _run("--check", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA GPU visible" in proc.stdout


def test_plugins_import_from_a_plain_checkout() -> None:
    # The device copies the working tree and installs nothing: `sq_trt.plugins` (plugins/ in the tree)
    # must still import, with ptx_run, from the checkout.
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(REPO / 'bench')!r})\n"
        "class Uninstalled:  # hides the installed package, as on the device\n"
        "    @staticmethod\n"
        "    def find_spec(name, path=None, target=None):\n"
        "        if name == 'sq_trt.plugins' and name not in sys.modules:\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Uninstalled)\n"
        "import gpu_ptx_check\n"
        "gpu_ptx_check._import_plugins()\n"
        "import sq_trt.plugins.ptx_run as m\n"
        "print(m.__file__, m.gemm_grid(1, 576, 16, 64))\n"
    )
    proc = _run(code=code)
    assert proc.returncode == 0, proc.stderr
    path, grid = proc.stdout.split()
    assert Path(path) == REPO / "plugins" / "ptx_run.py" and grid == "9"
