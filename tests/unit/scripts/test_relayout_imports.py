"""The rewrite of old module paths (scripts/relayout_imports.py) that merges after issue 26's layout need."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from script_module import load_script

ROOT = Path(__file__).resolve().parents[3]

OLD = """\
from sq_trt.smooth_config import SmoothConfig
from sq_trt.smooth import load_smoothed
from sq_trt.pipeline_stages import plan_stages
from sq_trt.pipeline import run_pipeline
from sq_trt.export.runtime import session_from_onnx
from sq_trt.artifacts import hash_json
from sq_trt.commands.calibrate import main
from sq_trt.quant.smoothing import smoothing_factor


def f():
    from sq_trt import calibrate
    from sq_trt import autoalpha

monkeypatch.setattr("sq_trt.pipeline_stages.plan_stages", g)
# see `sq_trt/artifacts.py`, `sq_trt/export/fused_cpu.py` and ``python -m sq_trt.gpu_kit report``
"""

NEW = """\
from sq_trt.smooth.config import SmoothConfig
from sq_trt.smooth.stage import load_smoothed
from sq_trt.pipeline.stages import plan_stages
from sq_trt.pipeline.runner import run_pipeline
from sq_trt.runtime.onnx import session_from_onnx
from sq_trt.artifacts import hash_json
from sq_trt.commands.calibrate import main
from sq_trt.quant.smoothing import smoothing_factor


def f():
    from sq_trt.calibrate import stage as calibrate
    from sq_trt.smooth import search as autoalpha

monkeypatch.setattr("sq_trt.pipeline.stages.plan_stages", g)
# see `sq_trt/artifacts/manifest.py`, `sq_trt/runtime/fused_cpu.py` and ``python -m sq_trt.hosttools.gpu_kit report``
"""


def test_old_paths_rewritten_new_and_unmoved_paths_kept() -> None:
    rewrite = load_script("scripts/relayout_imports.py").rewrite
    assert rewrite(OLD) == NEW
    assert rewrite(NEW) == NEW  # a second run (after a merge) changes nothing


def test_every_new_path_exists() -> None:
    moves = load_script("scripts/relayout_imports.py").MOVES
    for new in moves.values():
        assert importlib.util.find_spec(f"sq_trt.{new}") is not None, new
        assert (ROOT / "sq_trt" / (new.replace(".", "/") + ".py")).is_file(), new
    for old in moves:
        assert not (ROOT / "sq_trt" / (old.replace(".", "/") + ".py")).exists(), old
