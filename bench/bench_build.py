"""Benchmark: engine builds of SmolLM2-135M (FP16, INT8 per-tensor, INT8 per-token portable).

Not a test. Exports the demo model with sq-trt's exporter (per-tensor scales from a
small calibration: build time does not depend on their values), then builds each
ONNX with the chosen backend and records parse+build wall time, engine size, a
second build of the same ONNX (rebuild), and a single-target TensorRT-RTX build.

Timing cache: on TensorRT proper each ONNX is built cold (no cache), then with a
fresh cache file (filled), then again with that cache (warm). TensorRT-RTX has no
timing cache (its API is a no-op that would force a GPU query), so on that backend
the rebuild row is the like-for-like "second build" figure, and byte-identical
rebuilds show there is no tuning state to cache.

Results go to ``bench/results/build.<backend>.json``.

Usage::

    python bench/bench_build.py                         # auto backend (TensorRT-RTX on a CPU machine)
    python bench/bench_build.py --backend tensorrt      # on a GPU host / in the container
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from sq_trt.artifacts import library_versions
from sq_trt.engine.backends import Backend, select_backend
from sq_trt.engine.builder import build_engine
from sq_trt.engine.recipe import resolve_settings

PROFILE = {"name": "interactive", "batch": [1, 1, 4], "seq": [1, 128, 512]}


def _export(model: str, work: Path, calib_samples: int, calib_seq: int) -> dict[str, Any]:
    from sq_trt.calibrate.stage import calibrate
    from sq_trt.data import load_slices, tokenize_chunks
    from sq_trt.export.stage import ExportConfig, export_model
    from sq_trt.models.loading import load_model

    timings: dict[str, float] = {}
    start = time.perf_counter()
    loaded = load_model(model)
    timings["load_s"] = time.perf_counter() - start
    calib, _ = load_slices()
    chunks = tokenize_chunks(loaded.tokenizer, calib, seq_len=calib_seq, max_chunks=calib_samples)
    start = time.perf_counter()
    scales = calibrate(loaded, chunks, progress=False)
    timings["calibrate_s"] = time.perf_counter() - start
    start = time.perf_counter()
    per_tensor = export_model(
        loaded,
        work / "export-per-tensor",
        scales=scales,
        config=ExportConfig(act_mode="per_tensor"),
        force=True,
    )
    timings["export_per_tensor_s"] = time.perf_counter() - start
    start = time.perf_counter()
    per_token = export_model(
        loaded,
        work / "export-per-token",
        config=ExportConfig(act_mode="per_token", encoding="portable"),
        force=True,
    )
    timings["export_per_token_s"] = time.perf_counter() - start
    return {
        "onnx": {
            "fp16": per_tensor.fp16_path,
            "int8_per_tensor": per_tensor.int8_path,
            "int8_per_token_portable": per_token.int8_path,
        },
        "timings": {k: round(v, 2) for k, v in timings.items()},
    }


def _build(
    backend: Backend, onnx: Path, engines: Path, name: str, target: str, **extra: Any
) -> dict[str, Any]:
    settings = resolve_settings(
        {},
        {
            "onnx": onnx,
            "name": name,
            "target": target,
            "engines_dir": engines,
            "profiles": [PROFILE],
            **extra,
        },
        source="bench",
    )
    start = time.perf_counter()
    record = build_engine(settings, backend, force=True, log=lambda _: None)
    wall = time.perf_counter() - start
    plan = engines / name / record.plan
    return {
        "wall_s": round(wall, 3),
        "build_s": record.build_seconds,
        "plan_bytes": record.plan_bytes,
        "plan_sha256": hashlib.sha256(plan.read_bytes()).hexdigest(),
        "timing_cache": record.builder["timing_cache"],
    }


def _bench_variant(backend: Backend, onnx: Path, engines: Path, name: str) -> dict[str, Any]:
    row: dict[str, Any] = {"onnx": str(onnx), "onnx_bytes": onnx.stat().st_size}
    row["first"] = _build(backend, onnx, engines, name, "first")
    row["rebuild"] = _build(backend, onnx, engines, name, "rebuild")
    row["rebuild_identical"] = row["first"]["plan_sha256"] == row["rebuild"]["plan_sha256"]
    if backend.supports_timing_cache:
        cache = engines / f"{name}.timing-cache"
        cache.unlink(missing_ok=True)
        row["cache_fill"] = _build(backend, onnx, engines, name, "cache-fill", timing_cache=cache)
        row["cache_warm"] = _build(backend, onnx, engines, name, "cache-warm", timing_cache=cache)
        row["cache_speedup"] = round(row["first"]["wall_s"] / row["cache_warm"]["wall_s"], 2)
    else:
        row["single_target_sm89"] = _build(backend, onnx, engines, name, "sm89", compute_capabilities=["8.9"])
    return row


def main() -> None:
    """Run the benchmark and write the JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="demo")
    parser.add_argument("--backend", default="auto", choices=["auto", "tensorrt", "tensorrt_rtx"])
    parser.add_argument("--calib-samples", type=int, default=4)
    parser.add_argument("--calib-seq", type=int, default=128)
    parser.add_argument("--work", type=Path, help="keep exports and engines here (default: a temp dir)")
    parser.add_argument("--out", type=Path, help="result JSON (default: bench/results/build.<backend>.json)")
    args = parser.parse_args()

    backend, reason = select_backend(args.backend)
    print(f"[bench] {reason}")
    work = args.work or Path(tempfile.mkdtemp(prefix="sq-trt-bench-build-"))
    exported = _export(args.model, work, args.calib_samples, args.calib_seq)
    print(f"[bench] exported: {exported['timings']}")
    results: dict[str, Any] = {
        "benchmark": "build",
        "command": "python bench/bench_build.py "
        + " ".join(f"--{k} {v}" for k, v in vars(args).items() if v),
        "backend": backend.name,
        "backend_version": backend.version,
        "backend_reason": reason,
        "model": args.model,
        "profile": PROFILE,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "versions": library_versions(),
        "export": exported["timings"],
        "variants": {},
    }
    out = args.out or Path("bench/results") / f"build.{backend.name}.json"
    for variant, onnx in exported["onnx"].items():
        results["variants"][variant] = _bench_variant(backend, onnx, work / "engines", variant)
        print(f"[bench] {variant}: {json.dumps(results['variants'][variant])}")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"[bench] wrote {out}")


if __name__ == "__main__":
    main()
