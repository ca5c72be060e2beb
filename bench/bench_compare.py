"""Benchmark `sq-trt compare` on the demo model: ONNX Runtime, FP16 baseline vs each INT8 encoding.

Prepares (once, reused when present) the artifacts with the sq-trt CLI:
calibrate (demo, 32 x 512 calibration tokens) -> smooth (alpha 0.8) -> export of
naive per-token, SmoothQuant per-token (portable ops and plugin node) and
SmoothQuant per-tensor; then runs one `sq-trt compare` of the naive export's
``model.fp16.onnx`` against every ``model.int8.onnx`` on the held-out text
(default 32 x 512 = 16,384 tokens) and writes the report. Wall and CPU times
per stage and per runner go to ``bench/results/compare.json``.

``--export NAME=DIR`` (repeatable) and ``--calibration`` / ``--smoothed`` reuse
artifacts made elsewhere instead of preparing them (their manifests are recorded).

    python bench/bench_compare.py --work /tmp/sq-trt-bench-compare
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from sq_trt.artifacts import atomic_write_text
from sq_trt.cli import main

RESULTS_DIR = Path(__file__).parent / "results"
EXPORTS = {
    "naive-per-token": ["--model", "demo", "--act-scales", "{calib}", "--per-token-encoding", "portable"],
    "sq-per-token": ["--smoothed", "{smooth}", "--per-token-encoding", "portable"],
    "sq-per-token-plugin": ["--smoothed", "{smooth}", "--per-token-encoding", "plugin"],
    "sq-per-tensor": ["--smoothed", "{smooth}", "--act-mode", "per-tensor"],
}


def _step(timings: dict[str, float], name: str, argv: list[str], out: Path) -> None:
    if (out / "manifest.json").is_file():
        print(f"[bench] {name}: reusing {out}")
        return
    started = time.perf_counter()
    code = main(argv)
    if code != 0:
        raise SystemExit(f"[bench] {name} failed with exit code {code}")
    timings[name] = time.perf_counter() - started
    print(f"[bench] {name}: {timings[name]:.1f} s")


def _provenance(directory: Path) -> dict[str, object]:
    manifest = json.loads((directory / "manifest.json").read_text())
    keys = ("model_source", "act_mode", "per_token_encoding", "int8_dtype", "num_samples", "seq_len")
    return {"dir": str(directory), "stage": manifest["stage"]} | {
        k: manifest["extra"][k] for k in keys if k in manifest["extra"]
    }


def main_bench() -> None:
    """Prepare the artifacts, run compare and report, write the JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/sq-trt-bench-compare"))
    parser.add_argument("--samples", type=int, default=32, help="held-out samples of --seq-len tokens")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--alpha", default="0.8")
    parser.add_argument("--results-name", default="compare.json", help="file name under bench/results/")
    parser.add_argument("--calibration", type=Path, help="reuse this calibrate artifact")
    parser.add_argument("--smoothed", type=Path, help="reuse this smooth artifact")
    parser.add_argument("--export", action="append", default=[], metavar="NAME=DIR", help="reuse this export")
    parser.add_argument(
        "--baseline-export", default="naive-per-token", help="export whose FP16 ONNX is the baseline"
    )
    args = parser.parse_args()
    work: Path = args.work
    prep: dict[str, float] = {}
    calib = args.calibration or work / "calibrate"
    smooth = args.smoothed or work / "smooth"
    exports = {name: Path(path) for name, _, path in (text.partition("=") for text in args.export)}
    if not exports:
        _step(
            prep, "calibrate", ["calibrate", "--model", "demo", "--out", str(calib), "--no-progress"], calib
        )
        smooth_argv = ["smooth", "--model", "demo", "--act-scales", str(calib), "--alpha", args.alpha]
        _step(prep, "smooth", [*smooth_argv, "--out", str(smooth), "--no-progress"], smooth)
        for name, template in EXPORTS.items():
            argv = [part.format(calib=calib, smooth=smooth) for part in template]
            exports[name] = work / "export" / name
            _step(prep, f"export {name}", ["export", *argv, "--out", str(exports[name])], exports[name])

    out = work / "compare"
    argv = ["compare", "--baseline", f"fp16={exports[args.baseline_export] / 'model.fp16.onnx'}"]
    for name, directory in exports.items():
        argv += ["--candidate", f"{name}={directory / 'model.int8.onnx'}"]
    argv += ["--model", "demo", "--samples", str(args.samples), "--seq-len", str(args.seq_len)]
    argv += ["--gate", "sq-per-token:ppl_increase_pct<=1", "--gate", "sq-per-token:top1_agreement>=0.9"]
    load_before = os.getloadavg()
    cpu_before = os.times()
    started = time.perf_counter()
    code = main([*argv, "--out", str(out), "--force", "--no-progress"])
    compare_wall = time.perf_counter() - started
    cpu_after = os.times()
    compare_cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    started = time.perf_counter()
    report_argv = ["report", "--results", str(out), "--calibration", str(calib), "--smoothed", str(smooth)]
    # The report recomputes the compare run's verdict: same exit code (0 passed, 3 gate failed).
    assert main([*report_argv, "--out", str(work / "report"), "--force"]) == code
    report_wall = time.perf_counter() - started

    comparison = json.loads((out / "comparison.json").read_text())
    result = {
        "command": "python bench/bench_compare.py " + " ".join(sys.argv[1:]),
        "compare_argv": argv,
        "exit_code": code,
        "tokens": comparison["data"]["tokens"],
        "iterations": comparison["data"]["iterations"],
        "compare_wall_s": compare_wall,
        "compare_cpu_s": compare_cpu,
        "artifacts": {name: _provenance(directory) for name, directory in exports.items()}
        | {"calibration": _provenance(calib), "smoothed": _provenance(smooth)},
        "report_wall_s": report_wall,
        "inference_s_per_runner": comparison["timing"]["inference_s"],
        "metrics_s": comparison["timing"]["metrics_s"],
        "loop_wall_s": comparison["timing"]["wall_s"],
        "prepare_s": prep,
        "metrics": {name: comparison["metrics"][name]["summary"] for name in comparison["metrics"]},
        "gate": comparison["gate"],
        "host": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }
    atomic_write_text(RESULTS_DIR / args.results_name, json.dumps(result, indent=2) + "\n")
    print(
        json.dumps(
            {k: result[k] for k in ("compare_wall_s", "inference_s_per_runner", "metrics_s")}, indent=2
        )
    )
    for name, summary in result["metrics"].items():
        print(
            name,
            {
                k: round(summary[k], 5)
                for k in ("ppl", "ppl_increase_pct", "top1_agreement", "kl_mean")
                if k in summary
            },
        )


if __name__ == "__main__":
    main_bench()
