"""Perplexity of the demo's candidates on text of another domain (not a test): hybrid vs per token vs per tensor.

The candidates are calibrated and smoothed on the demo's text (CPython's pydoc); this scores
their exports, in ONNX Runtime, on a text the project never calibrates on. The default is the
GNU GPL v3 (``/usr/share/common-licenses/GPL-3`` on Debian): legal prose, another domain than
Python documentation. Run the demo pipeline first (``sq-trt pipeline --recipe
builders/smollm2-135m.yaml``), then:

    python bench/bench_hybrid_domain.py [--work work/smollm2-135m] [--text /usr/share/common-licenses/GPL-3] \
        [--result bench/results/hybrid_other_domain.json]

It runs ``sq-trt compare`` (FP16 export as the baseline; every candidate's ``model.int8.onnx``)
on the text's evaluation slice (``--calib-fraction`` of it is skipped, never used), and writes
each candidate's perplexity increase over FP16 with the plan's per-token FLOP share and the CPU facts.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = ("sq-per-token", "sq-hybrid", "sq-per-tensor", "naive-per-token")


def main() -> None:
    from bench_int8_gemm import cpu_facts  # type: ignore[import-not-found]

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "work" / "smollm2-135m")
    parser.add_argument("--text", default="/usr/share/common-licenses/GPL-3")
    parser.add_argument("--calib-fraction", default="0.05")
    parser.add_argument("--samples", default="16")
    parser.add_argument("--out", type=Path, default=Path("/tmp/sq-trt-hybrid-domain"))
    parser.add_argument("--result", type=Path, default=ROOT / "bench" / "results" / "hybrid_other_domain.json")
    args = parser.parse_args()
    export = args.work / "export"
    baseline = export / "sq-per-token" / "model.fp16.onnx"
    argv = [sys.executable, "-m", "sq_trt", "compare", "--baseline", f"fp16={baseline}"]
    for name in CANDIDATES:
        argv += ["--candidate", f"{name}={export / name / 'model.int8.onnx'}"]
    argv += ["--data", args.text, "--calib-fraction", args.calib_fraction, "--samples", args.samples]
    argv += ["--seq-len", "512", "--out", str(args.out), "--force", "--no-progress"]
    start = time.perf_counter()
    subprocess.run(argv, check=True)
    wall = time.perf_counter() - start
    comparison = json.loads((args.out / "comparison.json").read_text())
    rows: dict[str, Any] = {}
    for name in CANDIDATES:
        summary = comparison["metrics"][name]["summary"]
        plan = json.loads((export / name / "quant_plan.json").read_text())
        rows[name] = {
            "ppl": summary.get("ppl"),
            "ppl_baseline": summary.get("ppl_baseline"),
            "ppl_increase_pct": summary.get("ppl_increase_pct"),
            "top1_agreement": summary.get("top1_agreement"),
            "per_token_flops_share": plan["per_token_flops_share"],
        }
    payload = {"text": args.text, "data": comparison.get("data"), "wall_s": round(wall, 1), "cpu": cpu_facts(),
               "candidates": rows}
    args.result.parent.mkdir(parents=True, exist_ok=True)
    args.result.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
