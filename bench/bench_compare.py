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

``--memory`` measures memory instead (``bench/results/compare_memory.json``): the
peak RSS of the demo's `sq-trt compare` (FP16 baseline + the four INT8 exports,
``--samples 8``, as the demo recipe) sampled from outside every 20 ms over the
process and its children, each runner's own footprint (a process that creates
that one session and runs one batch), and the same for a tiny random Llama with
a 128,256-token vocabulary (FP16 baseline + its INT8 export under four names).
``--before-src DIR`` (a checkout of an older sq-trt, e.g. ``git archive``) also
runs the demo compare with that code and checks the metrics are identical;
``--parts`` measures a subset (``demo``, ``before``, ``vocab128k``), updating the
JSON. Hold the shared lock: the demo compare of the older code peaks at 6-9 GB:

    flock /tmp/bigmem.lock python bench/bench_compare.py --memory --samples 8 --work /tmp/sq-trt-bench-compare
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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


def _prepare(args: argparse.Namespace, work: Path) -> tuple[dict[str, Path], dict[str, float]]:
    """The exports to compare: given with --export, else made once under ``work`` (calibrate, smooth, export)."""
    prep: dict[str, float] = {}
    calib = args.calibration or work / "calibrate"
    smooth = args.smoothed or work / "smooth"
    exports = {name: Path(path) for name, _, path in (text.partition("=") for text in args.export)}
    if exports:
        return exports, prep
    _step(prep, "calibrate", ["calibrate", "--model", "demo", "--out", str(calib), "--no-progress"], calib)
    smooth_argv = ["smooth", "--model", "demo", "--act-scales", str(calib), "--alpha", args.alpha]
    _step(prep, "smooth", [*smooth_argv, "--out", str(smooth), "--no-progress"], smooth)
    for name, template in EXPORTS.items():
        argv = [part.format(calib=calib, smooth=smooth) for part in template]
        exports[name] = work / "export" / name
        _step(prep, f"export {name}", ["export", *argv, "--out", str(exports[name])], exports[name])
    return exports, prep


def _compare_argv(
    exports: dict[str, Path], baseline: str, model: str, samples: int, seq_len: int
) -> list[str]:
    """``sq-trt compare`` of the baseline export's FP16 ONNX against every export's INT8 ONNX."""
    argv = ["compare", "--baseline", f"fp16={exports[baseline] / 'model.fp16.onnx'}"]
    for name, directory in exports.items():
        argv += ["--candidate", f"{name}={directory / 'model.int8.onnx'}"]
    return argv + ["--model", model, "--samples", str(samples), "--seq-len", str(seq_len)]


def _run_sampled(
    argv: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> dict[str, Any]:
    """Run a command; its peak RSS read from outside every 20 ms, with its CPU time.

    The peak is the larger of the process tree's summed RSS and the process's own
    high-water mark (``VmHWM``, which catches spikes between samples). rusage's
    ``ru_maxrss`` is not used: Linux carries the parent's high-water mark across
    fork + exec, so it reports the bench's own RSS when that is larger.
    """
    import psutil

    started = time.perf_counter()
    with log.open("w") as sink:
        proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    root = psutil.Process(proc.pid)
    tree = hwm = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        try:
            tree = max(tree, sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]))
            hwm = max(hwm, _high_water_mark(proc.pid))
        except (psutil.Error, OSError):  # the process exited between listing and reading
            pass
        time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"[bench] {argv[:4]}... failed with exit code {proc.returncode}; see {log}")
    return {
        "peak_rss_mib": round(max(tree, hwm) / 2**20, 1),
        "tree_rss_mib_sampled": round(tree / 2**20, 1),
        "vm_hwm_mib": round(hwm / 2**20, 1),
        "wall_s": round(time.perf_counter() - started, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
    }


def _high_water_mark(pid: int) -> int:
    """``VmHWM`` of a process in bytes (its own peak RSS since exec)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _single_runner(spec: str, seq_len: int, vocab: int) -> None:
    """Child process: one runner alone, activated and run on one batch of ``seq_len`` tokens."""
    import numpy as np
    from polygraphy.comparator import Comparator

    from sq_trt.compare.runners import make_runner, parse_runner_spec

    feed = {"input_ids": np.random.default_rng(0).integers(0, vocab, size=(1, seq_len))}
    for _ in Comparator.run([make_runner(parse_runner_spec(spec))], data_loader=[feed], streaming=True):
        pass


def _footprints(specs: list[str], seq_len: int, vocab: int, logs: Path) -> dict[str, Any]:
    """Each runner's own footprint: a process running only that runner on one batch."""
    out = {}
    for spec in specs:
        name = spec.partition("=")[0]
        argv = [
            sys.executable,
            __file__,
            "--single-runner",
            spec,
            "--seq-len",
            str(seq_len),
            "--vocab",
            str(vocab),
        ]
        out[name] = _run_sampled(argv, logs / f"single-{name}.log")
        print(f"[bench] {name} alone: {out[name]}")
    return out


def _measure_compare(
    argv: list[str], out: Path, vocab: int, seq_len: int, src: Path | None = None
) -> dict[str, Any]:
    """The compare's peak RSS, each runner's own footprint, and their ratio."""
    # The older tree comes first on the path; run outside this checkout so `python -m` does not find it.
    env = dict(os.environ, PYTHONPATH=str(src.resolve())) if src is not None else None
    command = [sys.executable, "-m", "sq_trt.cli", *argv, "--out", str(out), "--force", "--no-progress"]
    compare = _run_sampled(command, out.parent / f"{out.name}.log", env, out.parent if src else None)
    specs = [argv[i + 1] for i, flag in enumerate(argv) if flag in ("--baseline", "--candidate")]
    runners = _footprints(specs, seq_len, vocab, out.parent) if src is None else {}
    largest = max((r["peak_rss_mib"] for r in runners.values()), default=None)
    comparison = json.loads((out / "comparison.json").read_text())
    return {
        "compare": compare,
        "runners_alone": runners,
        "largest_runner_mib": largest,
        "ratio_to_largest_runner": round(compare["peak_rss_mib"] / largest, 3) if largest else None,
        "tokens": comparison["data"]["tokens"],
        "timing": comparison["timing"],
        "summary": {name: comparison["metrics"][name]["summary"] for name in comparison["metrics"]},
    }


def _tiny_128k(work: Path) -> dict[str, Path]:
    """A tiny random Llama with Llama 3's 128,256-token vocabulary, exported (FP16 + portable per-token INT8)."""
    model_dir, export = work / "tiny-128k", work / "tiny-128k-export"
    if not (export / "manifest.json").is_file():
        import torch

        from sq_trt.models.tiny import byte_tokenizer, tiny_config

        config = tiny_config("llama")
        config.vocab_size = 128256
        torch.manual_seed(0)
        import transformers

        transformers.AutoModelForCausalLM.from_config(config).save_pretrained(model_dir)
        byte_tokenizer().save_pretrained(model_dir)
        argv = ["export", "--model", str(model_dir), "--per-token-encoding", "portable"]
        if main([*argv, "--out", str(export), "--force"]) != 0:
            raise SystemExit("[bench] export of the 128k-vocabulary model failed")
    # Four candidates, like the demo: the same INT8 file under four names.
    return {name: export for name in ("int8-a", "int8-b", "int8-c", "int8-d")}


def _memory_bench(args: argparse.Namespace, work: Path, exports: dict[str, Path]) -> None:
    """Peak RSS of the demo compare (and of an older sq-trt's), and of a 128k-vocabulary model's.

    ``--parts`` picks what to measure; the results update ``compare_memory.json`` part by part,
    so the older tree's run (6-9 GB, under the shared lock) can be measured on its own.
    """
    work.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / "compare_memory.json"
    result: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    parts = set(args.parts.split(","))
    argv = _compare_argv(exports, args.baseline_export, "demo", args.samples, args.seq_len)
    if "demo" in parts:
        result["demo"] = _measure_compare(argv, work / "compare-memory", 49152, args.seq_len)
    if "before" in parts and args.before_src is not None:
        before = _measure_compare(argv, work / "compare-memory-before", 49152, args.seq_len, args.before_src)
        result["demo_before"] = before | {"src": str(args.before_src)}
    if "vocab128k" in parts:
        tiny = _tiny_128k(work)
        tiny_argv = _compare_argv(tiny, "int8-a", str(work / "tiny-128k"), args.samples, args.seq_len)
        result["vocab_128k"] = _measure_compare(tiny_argv, work / "compare-128k", 128256, args.seq_len)
    if "demo" in result and "demo_before" in result:
        result["demo_metrics_identical_to_before"] = (
            result["demo"]["summary"] == result["demo_before"]["summary"]
        )
    result["commands"] = sorted(
        {*result.get("commands", []), "python bench/bench_compare.py " + " ".join(sys.argv[1:])}
    )
    result |= {"host": f"{platform.machine()}, {os.cpu_count()} CPUs", "load_average_after": os.getloadavg()}
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    for key in ("demo", "demo_before", "vocab_128k"):
        if key in result:
            entry = result[key]
            ratio = entry["ratio_to_largest_runner"]
            print(key, entry["compare"], "largest runner", entry["largest_runner_mib"], "ratio", ratio)


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
    parser.add_argument("--memory", action="store_true", help="measure peak RSS (compare_memory.json)")
    parser.add_argument("--before-src", type=Path, help="--memory: also run this older sq-trt source tree")
    parser.add_argument(
        "--parts", default="demo,before,vocab128k", help="--memory: what to measure (comma-separated)"
    )
    parser.add_argument("--single-runner", help=argparse.SUPPRESS)  # internal: one runner's footprint
    parser.add_argument("--vocab", type=int, default=49152, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single_runner:
        _single_runner(args.single_runner, args.seq_len, args.vocab)
        return
    work: Path = args.work
    exports, prep = _prepare(args, work)
    if args.memory:
        _memory_bench(args, work, exports)
        return
    calib = args.calibration or work / "calibrate"
    smooth = args.smoothed or work / "smooth"
    out = work / "compare"
    argv = _compare_argv(exports, args.baseline_export, "demo", args.samples, args.seq_len)
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
