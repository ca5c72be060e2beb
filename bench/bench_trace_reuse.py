"""Benchmark: exporting a smoothed model with and without the trace of its architecture kept.

Not a test. Loads the demo model (SmolLM2-135M), calibrates on a few chunks of the
embedded text and smooths a copy (SmoothQuant, fixed alpha: the export's cost does not
depend on the factors). Then, as the pipeline does, exports the unsmoothed model (the
naive candidate and FP16 baseline: one trace) and the smoothed one through the same
``FloatGraphs`` (its weights swapped into that trace), and exports the smoothed model
once more through a fresh ``FloatGraphs`` (a trace of its own, what every run did before).
Records wall and CPU time per export, the traces each did, and the sha256 of both
smoothed exports' ``.onnx`` files, which must be identical.

Results go to ``bench/results/trace_reuse.json``. Run it under the shared memory lock::

    flock /tmp/bigmem.lock /usr/bin/time -v .venv/bin/python bench/bench_trace_reuse.py
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path
from typing import Any


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _export(loaded: Any, out: Path, scales: Any, graphs: Any) -> dict[str, Any]:
    from sq_trt.export.stage import ExportConfig, export_model

    config = ExportConfig(act_mode="per_token", encoding="portable")
    traces = graphs.traces
    wall, cpu = time.perf_counter(), _cpu_s()
    export_model(loaded, out, scales=scales, config=config, float_graphs=graphs)
    return {
        "wall_s": round(time.perf_counter() - wall, 2),
        "cpu_s": round(_cpu_s() - cpu, 2),
        "traces": graphs.traces - traces,
        "sha256": {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.glob("*.onnx*"))
            if p.is_file()
        },
    }


def main() -> None:
    """Run the three exports and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--calib-samples", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("bench/results/trace_reuse.json"))
    args = parser.parse_args()

    from sq_trt.artifacts import library_versions
    from sq_trt.calibrate.stage import calibrate
    from sq_trt.data import load_slices, tokenize_chunks
    from sq_trt.export.stage import FloatGraphs
    from sq_trt.models.loading import load_model
    from sq_trt.smooth.config import SmoothConfig
    from sq_trt.smooth.stage import smooth_model

    loaded = load_model(args.model)
    calib, _ = load_slices()
    chunks = tokenize_chunks(loaded.tokenizer, calib, seq_len=256, max_chunks=args.calib_samples)
    scales = calibrate(loaded, chunks, progress=False)
    model = copy.deepcopy(loaded.model)
    smooth_model(model, scales, SmoothConfig(alpha=0.8))
    smoothed = dataclasses.replace(loaded, model=model)

    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-trace-reuse-") as tmp:
        work = Path(tmp)
        shared = FloatGraphs()
        # Per-token candidates (the demo's): no per-tensor scales needed by the export.
        runs["original_traced"] = _export(loaded, work / "naive", None, shared)
        runs["smoothed_swapped"] = _export(smoothed, work / "sq-swapped", None, shared)
        shared.clear()
        runs["smoothed_traced"] = _export(smoothed, work / "sq-fresh", None, FloatGraphs())
    swapped, fresh = runs["smoothed_swapped"]["sha256"], runs["smoothed_traced"]["sha256"]
    payload = {
        "model": args.model,
        "runs": runs,
        "smoothed_exports_identical": swapped == fresh,
        "export_before_after_s": [runs["smoothed_traced"]["wall_s"], runs["smoothed_swapped"]["wall_s"]],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "versions": library_versions(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    print(json.dumps({k: payload[k] for k in ("runs", "smoothed_exports_identical")}, indent=2))


if __name__ == "__main__":
    main()
