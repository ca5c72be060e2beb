"""Benchmarks of `sq-trt pipeline` (not a test): writes JSON into bench/results/.

Three modes:

* ``demo``: the demo recipe end to end in a fresh work directory (per-stage wall
  time and peak RSS), then a rerun with every artifact cached, then the accuracy
  figures of every candidate from the compare artifact ->
  ``bench/results/pipeline.json``.
* ``offload``: peak RSS of calibrate + smooth on a 1B-parameter Llama (random
  weights from a config: hidden 2048, 16 layers, GQA 32/8 heads, vocab 128256),
  in memory and with the decoder layers offloaded to disk, each in a fresh
  process -> ``bench/results/pipeline_offload.json``.

* ``goals``: every figure issue 16 sets a goal for, for two checkouts in one run
  on the same machine (each with its own ``.venv``; every step a fresh child
  process of that checkout): the demo end to end (wall, CPU, peak RSS of the
  process tree, float traces counted around ``torch.onnx.export``, accuracy of
  every candidate), compare alone in a fresh process (its own peak RSS),
  ``sq-trt calibrate`` against ModelOpt side by side, the 1.24 B export's peak
  memory over its FP16 weight bytes, and the suite time read from CI logs ->
  ``bench/results/pipeline_goals.json`` and a markdown table on stdout.

    python bench/bench_pipeline.py demo [--recipe builders/smollm2-135m.yaml] [--set k=v ...]
    python bench/bench_pipeline.py offload [--ckpt /tmp/llama-1b-random]
    python bench/bench_pipeline.py goals --before /work/wt-before [--after .] [--parts demo,calibrate,large-export]
        [--suite-log-before LOG --suite-log-after LOG] [--previous bench/results/pipeline_goals.json]
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
import threading
import time
from pathlib import Path
from typing import Any

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
    from sq_trt.pipeline.recipe import load_recipe
    from sq_trt.pipeline.stages import run_pipeline

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

    from sq_trt.calibrate.stage import calibrate
    from sq_trt.smooth.stage import SmoothConfig, save_smoothed, smooth_model, smoothed_act_scales

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
        from sq_trt.models.offload import load_offloaded, smooth_offloaded

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


# ---------------------------------------------------------------------------------------------
# `goals`: every figure issue 16 sets a goal for, measured for two checkouts (before / after)
# in one run, on the same machine, each step in a fresh child process of that checkout's venv.
# ---------------------------------------------------------------------------------------------

# Counts torch.onnx.export calls (the traces) around the CLI, whichever version of the code runs.
_TRACE_PRELUDE = """
import atexit, json, os, sys
import torch.onnx
_count = {"traces": 0}
_export = torch.onnx.export
def _counting(*args, **kwargs):
    _count["traces"] += 1
    return _export(*args, **kwargs)
torch.onnx.export = _counting
atexit.register(lambda: open(os.environ["SQ_TRT_BENCH_TRACES"], "w").write(json.dumps(_count)))
from sq_trt.cli import main
sys.exit(main(sys.argv[1:]))
"""

GOALS = {
    "demo_wall_s": ("demo end to end, idle, s", "<=", 240.0),
    "traces": ("float traces per demo run", "<=", 1.0),
    "compare_peak_rss_mib": ("compare peak RSS, MiB (fresh process)", "<=", 2560.0),
    "calibrate_ratio": ("sq-trt calibrate / ModelOpt CPU time, same tokens", "<=", 1.0),
    "export_peak_over_fp16": ("1.24B export peak anonymous memory / FP16 weight bytes", "<=", 2.5),
    "suite_s": ("test suite (pytest, CI machine), s", "<=", 600.0),
    "sq_per_tensor_ppl_pct": ("demo sq-per-tensor perplexity increase, %", "<=", 5.0),
    "sq_per_token_ppl_pct": ("demo sq-per-token perplexity increase, %", "<=", 2.0),
}


def _sampled(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``command``; wall time, children's CPU time and the peak RSS of its process tree (sampled)."""
    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(
        command, cwd=cwd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    peak = 0
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout or []), daemon=True)
    reader.start()
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.1)
    reader.join()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "rc": proc.returncode,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "peak_rss_mib": round(peak / 2**20),
        "tail": "".join(output[-15:]),
    }


def _python(repo: Path) -> str:
    python = repo / ".venv" / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{python} is missing: run `bash scripts/setup.sh` in {repo} first")
    return str(python)


def goal_demo(repo: Path, out: Path) -> dict[str, Any]:
    """The demo recipe end to end (traces counted), then compare alone in a fresh process."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    traces = out / "traces.json"
    argv = ["pipeline", "--recipe", "builders/smollm2-135m.yaml", "--out", str(out), "--quiet"]
    run = _sampled([_python(repo), "-c", _TRACE_PRELUDE, *argv], repo, {"SQ_TRT_BENCH_TRACES": str(traces)})
    if run["rc"] != 0:
        return {"error": run["tail"], **run}
    summary_path = next(out.rglob("pipeline_summary.json"))
    summary = json.loads(summary_path.read_text())
    work = summary_path.parent
    comparison = json.loads((work / "compare" / "comparison.json").read_text())
    accuracy = {
        name: {k: m["summary"].get(k) for k in ("ppl_increase_pct", "top1_agreement", "kl_mean")}
        for name, m in comparison["metrics"].items()
    }
    # Compare's own peak: the first run's RSS column is the process's maximum so far (exports included).
    for stage in ("compare", "report"):
        shutil.rmtree(work / stage, ignore_errors=True)
    rerun = _sampled([_python(repo), "-m", "sq_trt.cli", *argv], repo)
    return {
        "wall_s": run["wall_s"],
        "cpu_s": run["cpu_s"],
        "peak_rss_mib": run["peak_rss_mib"],
        "traces": json.loads(traces.read_text())["traces"],
        "stages": summary.get("stages", summary.get("reports")),
        "accuracy": accuracy,
        "compare_rerun": {k: rerun[k] for k in ("rc", "wall_s", "cpu_s", "peak_rss_mib")},
    }


def goal_large_export(repo: Path, out: Path) -> dict[str, Any]:
    """``bench_large_export.py`` (this checkout's copy) run on ``repo``'s code."""
    result = out / "large_export.json"
    script = str(ROOT / "bench" / "bench_large_export.py")
    run = _sampled([_python(repo), script, "--export-only", "--out", str(result)], repo)
    if run["rc"] != 0:
        return {"error": run["tail"], **run}
    data = json.loads(result.read_text())
    fp16 = data["float_weights_bytes"]["fp16"] if isinstance(data["float_weights_bytes"], dict) else None
    return {
        "export_peak_anon_bytes": data["export_peak_anon_bytes"],
        "fp16_weight_bytes": fp16,
        "export_wall_s": data["export_wall_s"],
        "ratio": round(data["export_peak_anon_bytes"] / fp16, 2) if fp16 else None,
    }


def goal_calibrate(repos: dict[str, Path], out: Path, repeats: int, modelopt_python: str) -> dict[str, Any]:
    """``bench_calibrate_modelopt.py`` (this checkout's copy) with each checkout's sq-trt, one after another."""
    results = {}
    for label, repo in repos.items():
        result = out / f"calibrate_{label}.json"
        command = [
            _python(repo), str(ROOT / "bench" / "bench_calibrate_modelopt.py"), "--out", str(result),
            "--reps", str(repeats), "--modelopt-python", modelopt_python,
        ]  # fmt: skip
        run = _sampled(command, repo)
        results[label] = json.loads(result.read_text()) if run["rc"] == 0 else {"error": run["tail"]}
    return results


def _suite_run(log: Path) -> dict[str, Any]:
    """pytest's own total from a CI log (``... passed ... in 842.31s (0:14:02)``) and the commit it tested."""
    import re

    text = log.read_text(errors="replace")
    found = re.findall(r"passed.* in ([0-9.]+)s", text)
    commit = re.findall(r"sq-trt tests: commit (.+)", text)  # scripts/test.sh prints it (since issue 16)
    return {
        "suite_s": float(found[-1]) if found else None,
        "suite_log": str(log),
        "suite_commit": commit[-1].strip() if commit else None,
    }


def _figures(result: dict[str, Any]) -> dict[str, float | None]:
    """One checkout's measurements -> the figure each goal is stated in."""
    demo = result.get("demo") or {}
    accuracy = demo.get("accuracy") or {}
    large = result.get("large_export") or {}
    calib = result.get("calibrate") or {}
    return {
        "demo_wall_s": demo.get("wall_s"),
        "traces": demo.get("traces"),
        "compare_peak_rss_mib": (demo.get("compare_rerun") or {}).get("peak_rss_mib"),
        "calibrate_ratio": (calib.get("ratios", {}).get("sq-trt-calibrate / modelopt") or {}).get("cpu_s"),
        "export_peak_over_fp16": large.get("ratio"),
        "suite_s": result.get("suite_s"),
        "sq_per_tensor_ppl_pct": (accuracy.get("sq-per-tensor") or {}).get("ppl_increase_pct"),
        "sq_per_token_ppl_pct": (accuracy.get("sq-per-token") or {}).get("ppl_increase_pct"),
    }


def goals_table(results: dict[str, dict[str, Any]]) -> str:
    """Markdown: one row per goal, one column per checkout, and whether the last one meets it."""
    labels = list(results)
    figures = {label: _figures(results[label]) for label in labels}
    rows = ["| goal | target | " + " | ".join(labels) + " | met |", "|---|---|" + "---|" * (len(labels) + 1)]
    for key, (title, op, bound) in GOALS.items():
        values = [figures[label][key] for label in labels]
        last = values[-1]
        met = "n/a" if last is None else ("yes" if (last <= bound if op == "<=" else last >= bound) else "no")
        cells = " | ".join("-" if v is None else f"{v:g}" for v in values)
        rows.append(f"| {title} | {op} {bound:g} | {cells} | {met} |")
    return "\n".join(rows)


def bench_goals(args: argparse.Namespace) -> dict[str, Any]:
    repos = {"before": Path(args.before).resolve(), "after": Path(args.after).resolve()}
    command = "python bench/bench_pipeline.py goals " + " ".join(sys.argv[2:])
    commands = [command]
    work = Path(args.work)
    parts = set(args.parts.split(","))
    results: dict[str, dict[str, Any]] = {
        label: {"repo": str(repo), "commit": _commit(repo)} for label, repo in repos.items()
    }
    if args.previous:  # keep the parts not measured this time (same checkouts only)
        earlier = json.loads(Path(args.previous).read_text())
        previous = earlier["results"]
        commands = [*earlier.get("commands", [earlier.get("command")]), command]
        for label, measured in results.items():
            if previous[label]["commit"] != measured["commit"]:
                raise SystemExit(f"--previous measured another {label} commit: {previous[label]['commit']}")
            results[label] = {**previous[label], **measured}
    for label, log in (("before", args.suite_log_before), ("after", args.suite_log_after)):
        if log:
            results[label].update(_suite_run(Path(log)))
    for label, repo in repos.items():
        if "demo" in parts:
            results[label]["demo"] = goal_demo(repo, work / label / "demo")
            print(f"[goals] {label} demo: {json.dumps(_figures(results[label]))}", flush=True)
    if "calibrate" in parts:
        calib = goal_calibrate(repos, work, args.repeats, args.modelopt_python)
        for label in repos:
            results[label]["calibrate"] = calib[label]
    if "large-export" in parts:
        for label, repo in repos.items():
            results[label]["large_export"] = goal_large_export(repo, work / label)
    table = goals_table(results)
    print(table)
    return {
        "command": command,
        "commands": commands,  # with --previous: every run whose figures are kept
        "host": _host(),
        "goals": {k: {"title": t, "op": op, "bound": b} for k, (t, op, b) in GOALS.items()},
        "results": results,
        "figures": {label: _figures(results[label]) for label in results},
        "table": table,
    }


def _commit(repo: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


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
    goals = sub.add_parser("goals", help="every issue-16 goal, measured for two checkouts")
    goals.add_argument("--before", required=True, help="checkout of the code before the change (with .venv)")
    goals.add_argument("--after", default=str(ROOT), help="checkout after the change (default: this one)")
    goals.add_argument("--parts", default="demo,calibrate,large-export", help="comma-separated subset")
    goals.add_argument("--work", default="/tmp/sq-trt-goals")
    goals.add_argument(
        "--repeats", type=int, default=2, help="calibrate-vs-ModelOpt repetitions per checkout"
    )
    goals.add_argument("--modelopt-python", default="/work/venv-modelopt/bin/python")
    goals.add_argument(
        "--suite-log-before", help="a CI log of the suite before (pytest's total is read from it)"
    )
    goals.add_argument("--suite-log-after", help="a CI log of the suite after")
    goals.add_argument(
        "--previous", help="an earlier result of the same two commits: parts not in --parts are kept from it"
    )
    goals.add_argument("--result", default=str(RESULTS / "pipeline_goals.json"))
    args = parser.parse_args()
    if args.mode_name == "offload-child":
        offload_child(args)
        return
    runs = {"demo": bench_demo, "offload": bench_offload, "goals": bench_goals}
    result = runs[args.mode_name](args)
    out = Path(args.result)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
