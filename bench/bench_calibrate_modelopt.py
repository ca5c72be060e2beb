"""Calibrate side by side with NVIDIA ModelOpt: same model, same tokens, fresh processes, interleaved.

On the demo model (SmolLM2-135M-Instruct, from sq-trt's cache) and the demo recipe's
calibration tokens (32 x 512 from the embedded text, ``sq_trt.calibrate.stage.calibration_chunks``),
each repetition runs, each in a fresh child process timed from the outside (process start to
exit: interpreter start, imports and model load included):

* ``modelopt``: load the model with transformers, ``mtq.quantize(model, mtq.INT8_SMOOTHQUANT_CFG,
  forward_loop)`` with a forward loop over the same chunks (batch 1, ``torch.no_grad``, the whole
  causal LM as a user calls it). ModelOpt's SmoothQuant config calibrates, computes and applies
  the smoothing factors and inserts fake quantizers (per-channel weights, per-tensor activations).
* ``sq-trt-calibrate``: ``sq-trt calibrate --model demo`` (the CLI, its defaults = the demo recipe):
  load, cut the chunks, record the statistics, write the act_scales artifact. Statistics only.
* ``sq-trt-calibrate-smooth``: the same load and calibration, then ``smooth_model`` with the demo
  recipe's smoothing (alpha 0.8, norm->linear pairs) in memory: the work comparable to ModelOpt's
  (the smoothed checkpoint is not written, as ModelOpt writes nothing).

The ModelOpt side runs in its own virtual environment (``--modelopt-python``; ModelOpt is never
a dependency of sq-trt) and is skipped with a message when that interpreter is absent.

    python bench/bench_calibrate_modelopt.py [--reps 3] [--modelopt-python /work/venv-modelopt/bin/python]

Results: ``bench/results/calibrate_modelopt.json`` (per run: wall and CPU seconds, peak RSS;
medians; ratios sq-trt / ModelOpt).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DEFAULT_MODELOPT_PYTHON = "/work/venv-modelopt/bin/python"
SIDES = ("modelopt", "sq-trt-calibrate", "sq-trt-calibrate-smooth")
# The demo recipe's smoothing (builders/smollm2-135m.yaml): alpha 0.8, no linear->linear pairs.
DEMO_ALPHA = 0.8


def _child_modelopt(model_dir: str, chunks_path: str) -> dict[str, float]:
    """ModelOpt: load, quantize with INT8_SMOOTHQUANT_CFG over the chunks (runs in ModelOpt's venv)."""
    started = time.perf_counter()
    import modelopt.torch.quantization as mtq
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    chunks = torch.from_numpy(np.load(chunks_path, allow_pickle=False))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    loaded = time.perf_counter()

    @torch.no_grad()
    def forward_loop(m: torch.nn.Module) -> None:
        for row in chunks:
            m(input_ids=row[None])

    mtq.quantize(model, mtq.INT8_SMOOTHQUANT_CFG, forward_loop)
    done = time.perf_counter()
    return {"load_s": loaded - started, "quantize_s": done - loaded}


def _child_sq_trt(chunks_path: str, smooth: bool) -> dict[str, float]:
    """sq-trt: what ``sq-trt calibrate --model demo`` runs (load, chunks, calibrate, write), then smoothing."""
    started = time.perf_counter()
    import numpy as np
    import torch

    from sq_trt.calibrate import stage as calibrate
    from sq_trt.data import load_slices
    from sq_trt.models.loading import load_model

    loaded = load_model("demo", local_files_only=True)
    config = calibrate.CalibrateConfig()
    calibration, _ = load_slices("embedded")
    chunks = calibrate.calibration_chunks(config, loaded, calibration)
    load_done = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        scales = calibrate.run(
            config, loaded=loaded, text=calibration, text_column="text", out=Path(tmp) / "act_scales",
            chunks=chunks, progress=False,
        )  # fmt: skip
    calib_done = time.perf_counter()
    times = {"load_s": load_done - started, "calibrate_s": calib_done - load_done}
    if smooth:
        from sq_trt.smooth.stage import SmoothConfig, smooth_model

        smooth_model(loaded.model, scales, SmoothConfig(alpha=DEMO_ALPHA))
        times["smooth_s"] = time.perf_counter() - calib_done
    # The tokens ModelOpt saw must be these (checked after the clock).
    if not torch.equal(chunks, torch.from_numpy(np.load(chunks_path, allow_pickle=False))):
        raise SystemExit("the sq-trt chunks differ from the ones given to ModelOpt")
    return times


def _run_child(python: str, side: str, chunks_path: Path, model_dir: Path, threads: int | None) -> dict:
    """One measurement: a fresh process, wall from spawn to exit, CPU and peak RSS from ``wait4``."""
    command = [python, str(Path(__file__).resolve()), "--child", side, "--chunks", str(chunks_path),
               "--model-dir", str(model_dir)]  # fmt: skip
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = str(ROOT) if side != "modelopt" else ""
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{side} child failed with exit code {proc.returncode}")
    phases = json.loads(stdout.strip().splitlines()[-1])
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_bytes": usage.ru_maxrss * 1024,
        "phases_s": {key: round(value, 2) for key, value in phases.items()},
    }


def _prepare_chunks(path: Path) -> tuple[Path, list[int]]:
    """The demo recipe's calibration chunks, saved as ``.npy`` for both sides; the model directory."""
    import numpy as np

    from sq_trt.calibrate import stage as calibrate
    from sq_trt.data import load_slices
    from sq_trt.models.demo import demo_model_dir
    from sq_trt.models.loading import load_model

    loaded = load_model("demo", local_files_only=True)
    calibration, _ = load_slices("embedded")
    chunks = calibrate.calibration_chunks(calibrate.CalibrateConfig(), loaded, calibration)
    np.save(path, chunks.numpy(), allow_pickle=False)
    return demo_model_dir(fetch=False), list(chunks.shape)


def _summary(runs: dict[str, list[dict]]) -> dict:
    medians = {
        side: {key: round(statistics.median(r[key] for r in values), 2) for key in ("wall_s", "cpu_s")}
        for side, values in runs.items()
        if values
    }
    ratios = {}
    if "modelopt" in medians:
        for side in ("sq-trt-calibrate", "sq-trt-calibrate-smooth"):
            if side in medians:
                ratios[f"{side} / modelopt"] = {
                    key: round(medians[side][key] / medians["modelopt"][key], 3)
                    for key in ("wall_s", "cpu_s")
                }
    return {"medians": medians, "ratios": ratios}


def main(argv: list[str] | None = None) -> int:
    """Run the interleaved repetitions (or, with ``--child``, one side) and write the JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each side (interleaved)")
    parser.add_argument(
        "--modelopt-python", default=DEFAULT_MODELOPT_PYTHON, help="ModelOpt venv interpreter"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="OMP/MKL threads of every child (default: unset)"
    )
    parser.add_argument("--out", default=str(RESULTS / "calibrate_modelopt.json"))
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--chunks", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        if args.child == "modelopt":
            phases = _child_modelopt(args.model_dir, args.chunks)
        else:
            phases = _child_sq_trt(args.chunks, smooth=args.child == "sq-trt-calibrate-smooth")
        print(json.dumps(phases))
        return 0

    sides = list(SIDES)
    if not Path(args.modelopt_python).is_file():
        print(
            f"ModelOpt side skipped: no interpreter at {args.modelopt_python} (see docs/benchmarks/calibrate.md)"
        )
        sides.remove("modelopt")
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    with tempfile.TemporaryDirectory() as tmp:
        chunks_path = Path(tmp) / "chunks.npy"
        model_dir, shape = _prepare_chunks(chunks_path)
        for rep in range(args.reps):
            for side in sides:  # interleaved: drift in machine load hits every side alike
                python = args.modelopt_python if side == "modelopt" else sys.executable
                runs[side].append(_run_child(python, side, chunks_path, model_dir, args.threads))
                print(f"rep {rep + 1}/{args.reps} {side}: {json.dumps(runs[side][-1])}", flush=True)
    result = {
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "tokens": shape,
        "threads": args.threads or os.environ.get("OMP_NUM_THREADS"),  # None: torch's default
        "runs": runs,
        **_summary(runs),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_avg_at_end": os.getloadavg(),
        },
    }
    RESULTS.mkdir(exist_ok=True)
    from sq_trt.artifacts import atomic_write_text

    atomic_write_text(args.out, json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps({k: result[k] for k in ("medians", "ratios")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
