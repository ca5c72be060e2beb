"""Benchmarks of `sq-trt pipeline` (not a test): writes JSON into bench/results/.

Two modes:

* ``demo``: the demo recipe end to end in a fresh work directory (per-stage wall
  time and peak RSS), then a rerun with every artifact cached, then the accuracy
  figures of every candidate from the compare artifact ->
  ``bench/results/pipeline.json``.
* ``offload``: peak RSS of calibrate + smooth on a 1B-parameter Llama (random
  weights from a config: hidden 2048, 16 layers, GQA 32/8 heads, vocab 128256),
  in memory and with the decoder layers offloaded to disk, each in a fresh
  process -> ``bench/results/pipeline_offload.json``.

    python bench/bench_pipeline.py demo [--recipe builders/smollm2-135m.yaml] [--set k=v ...]
    python bench/bench_pipeline.py offload [--ckpt /tmp/llama-1b-random]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def _host() -> dict[str, object]:
    load = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "loadavg_1_5_15": [round(x, 2) for x in load],
    }


def bench_demo(args: argparse.Namespace) -> dict[str, object]:
    from sq_trt.pipeline_stages import run_pipeline
    from sq_trt.recipe import load_recipe

    out = Path(args.out or tempfile.mkdtemp(prefix="sq-trt-bench-"))
    if out.exists() and args.fresh:
        shutil.rmtree(out)
    overrides = [f"work_dir={out / 'work'}", f"engines_dir={out / 'engines'}", *args.set]
    recipe = load_recipe(args.recipe, overrides)
    host_before = _host()
    start = time.perf_counter()
    first = run_pipeline(recipe, progress=False)
    first_wall = time.perf_counter() - start
    start = time.perf_counter()
    cached = run_pipeline(recipe, progress=False)
    cached_wall = time.perf_counter() - start
    comparison = json.loads((recipe.resolved_work_dir / "compare" / "comparison.json").read_text())
    keys = (
        "ppl_baseline",
        "ppl",
        "ppl_increase_pct",
        "top1_agreement",
        "top5_agreement",
        "kl_mean",
        "cosine",
    )
    accuracy = {
        name: {k: m["summary"].get(k) for k in keys if k in m["summary"]}
        for name, m in comparison["metrics"].items()
    }
    return {
        "command": "python bench/bench_pipeline.py demo " + " ".join(sys.argv[2:]),
        "recipe": str(args.recipe),
        "overrides": args.set,
        "host": host_before,
        "first_run": {
            "wall_s": round(first_wall, 1),
            "stages": [
                {
                    "stage": r.name,
                    "status": r.status,
                    "wall_s": round(r.wall_s, 1),
                    "cpu_s": round(r.cpu_s, 1),
                    "peak_rss_mib": round(r.peak_rss_mib) if r.peak_rss_mib else None,
                    "detail": r.detail,
                }
                for r in first.reports
            ],
            "gate_passed": first.gate_passed,
        },
        "cached_rerun": {
            "wall_s": round(cached_wall, 1),
            "statuses": {r.name: r.status for r in cached.reports},
        },
        "peak_rss_process_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "accuracy": accuracy,
        "comparison_data": comparison.get("data", {}),
        "report": str(first.report_path),
    }


LLAMA_1B = {
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
}


def make_checkpoint(path: Path, layers: int | None = None) -> int:
    """Save a random-weight 1B Llama (fp32; ``layers`` decoder layers instead of 16) with the byte tokenizer.

    Returns:
        Its parameter count.
    """
    import torch
    import transformers

    from sq_trt.models.tiny import byte_tokenizer

    torch.manual_seed(0)
    config = transformers.LlamaConfig(**{**LLAMA_1B, **({"num_hidden_layers": layers} if layers else {})})
    model = transformers.LlamaForCausalLM(config).eval()
    model.save_pretrained(path)
    byte_tokenizer().save_pretrained(path)
    return sum(p.numel() for p in model.parameters())


def offload_child(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process: load -> calibrate -> smooth -> save; prints JSON."""
    import threading

    import torch

    from sq_trt.calibrate import calibrate
    from sq_trt.smooth import SmoothConfig, save_smoothed, smooth_model, smoothed_act_scales

    # ru_maxrss counts file-backed pages too: the memory-mapped safetensors checkpoint an
    # offloaded model streams from is resident while touched but reclaimable, so the
    # anonymous part (what the process really needs) is sampled separately.
    anon_peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            with open("/proc/self/status") as handle:
                for line in handle:
                    if line.startswith("RssAnon:"):
                        anon_peak[0] = max(anon_peak[0], int(line.split()[1]) // 1024)
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    def peak() -> dict[str, int]:
        return {
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "peak_anon_mib": anon_peak[0],
        }

    steps: dict[str, dict[str, object]] = {}
    work = Path(args.work)
    start = time.perf_counter()
    if args.mode == "offload":
        from sq_trt.offload import load_offloaded, smooth_offloaded

        loaded = load_offloaded(args.ckpt, work / "offload", local_files_only=True)
    else:
        from sq_trt.models.loading import load_model

        loaded = load_model(args.ckpt, local_files_only=True)
    steps["load"] = {"wall_s": round(time.perf_counter() - start, 1), **peak()}
    ids = torch.randint(0, 256, (args.samples, args.seq_len), generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    scales = calibrate(loaded, ids, progress=False)
    steps["calibrate"] = {"wall_s": round(time.perf_counter() - start, 1), **peak()}
    start = time.perf_counter()
    config = SmoothConfig(alpha=0.5)
    if args.mode == "offload":
        result = smooth_offloaded(loaded, scales, config)  # type: ignore[arg-type]
    else:
        result = smooth_model(loaded.model, scales, config)
    steps["smooth"] = {"wall_s": round(time.perf_counter() - start, 1), **peak()}
    start = time.perf_counter()
    save_smoothed(
        work / f"smooth-{args.mode}", loaded, result, smoothed_act_scales(scales, result), force=True
    )
    steps["save"] = {"wall_s": round(time.perf_counter() - start, 1), **peak()}
    print(
        json.dumps({"mode": args.mode, "steps": steps, "fingerprint": scales.meta.get("model_fingerprint")})
    )


def bench_offload(args: argparse.Namespace) -> dict[str, object]:
    ckpt = Path(args.ckpt)
    params = None
    if not (ckpt / "config.json").is_file():
        ckpt.mkdir(parents=True, exist_ok=True)
        params = make_checkpoint(ckpt)
    work = Path(tempfile.mkdtemp(prefix="sq-trt-offload-"))
    runs = {}
    for mode in ("memory", "offload"):
        command = [
            sys.executable, __file__, "offload-child", "--mode", mode, "--ckpt", str(ckpt), "--work", str(work),
            "--samples", str(args.samples), "--seq-len", str(args.seq_len),
        ]  # fmt: skip
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        runs[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    shutil.rmtree(work, ignore_errors=True)
    return {
        "command": "python bench/bench_pipeline.py offload " + " ".join(sys.argv[2:]),
        "model": {"config": LLAMA_1B, "parameters": params, "dtype": "float32", "checkpoint": str(ckpt)},
        "calibration": {"samples": args.samples, "seq_len": args.seq_len},
        "host": _host(),
        "runs": runs,
        "same_fingerprint": runs["memory"]["fingerprint"] == runs["offload"]["fingerprint"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode_name", required=True)
    demo = sub.add_parser("demo")
    demo.add_argument("--recipe", default=str(ROOT / "builders" / "smollm2-135m.yaml"))
    demo.add_argument("--set", action="append", default=[])
    demo.add_argument("--out", help="bench work directory (default: a new temp dir)")
    demo.add_argument("--fresh", action="store_true", help="delete --out first")
    demo.add_argument("--result", default=str(RESULTS / "pipeline.json"))
    off = sub.add_parser("offload")
    off.add_argument("--ckpt", default="/tmp/sq-trt-llama-1b-random")
    off.add_argument("--samples", type=int, default=2)
    off.add_argument("--seq-len", type=int, default=128)
    off.add_argument("--result", default=str(RESULTS / "pipeline_offload.json"))
    child = sub.add_parser("offload-child")
    child.add_argument("--mode", choices=("memory", "offload"), required=True)
    child.add_argument("--ckpt", required=True)
    child.add_argument("--work", required=True)
    child.add_argument("--samples", type=int, default=2)
    child.add_argument("--seq-len", type=int, default=128)
    args = parser.parse_args()
    if args.mode_name == "offload-child":
        offload_child(args)
        return
    result = bench_demo(args) if args.mode_name == "demo" else bench_offload(args)
    out = Path(args.result)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
