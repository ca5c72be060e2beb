"""Benchmark (not a test): `sq-trt pipeline` rerun with every stage cached, each run a fresh process.

For every checkout given (``--checkout LABEL=PATH``; default ``after`` = this one), the
first run fills that checkout's work directory (the code is part of each stage's cache
key, so checkouts never share one); then ``--repeats`` reruns per checkout, interleaved
(A B A B ...) so both see the same load on a shared machine. Each run records wall time,
CPU time (user + system of the child, from ``RUSAGE_CHILDREN``), the stage statuses (every
one must be ``reused`` or ``skipped``), the heavy libraries the child imported, and the
load average. Writes ``bench/results/cached_rerun_<scenario>.json``.

    python bench/bench_cached_rerun.py tiny [--checkout before=/tmp/base --checkout after=.] [--repeats 7]
    python bench/bench_cached_rerun.py demo --work /tmp/cr      # the first run is the whole demo (minutes)
    python bench/bench_cached_rerun.py demo --preflight-only --checkout before=/tmp/base --checkout after=.

Each child runs ``python -c`` in the checkout's directory, so that checkout's ``sq_trt``
is the one imported (the result records the path). Python's bytecode cache is on, as
for a user (``PYTHONDONTWRITEBYTECODE`` is removed from the child's environment unless
``--no-bytecode-cache``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
RECIPE = ROOT / "builders" / "smollm2-135m.yaml"
HEAVY = ("torch", "transformers", "onnx", "onnxruntime", "numpy", "tensorrt_rtx_libs", "tqdm")
# The demo recipe on the tiny random Llama (all 14 stages: calibrate, two smoothings, four exports,
# five builds skipped by build.backend=none, compare, report), sized to fill its cache in under a minute.
TINY = [
    "model.source=tiny:llama",
    "calibrate.samples=2",
    "calibrate.seq_len=32",
    "compare.samples=2",
    "compare.seq_len=32",
    "build.profiles.0.seq=[1,32,64]",
    "build.backend=none",
    "gate=['sq-per-token:ppl_increase_pct<=1000']",
]
# The demo recipe with both smoothings at a fixed alpha 0.8 instead of searched: the same 14 stages, model,
# engines and comparison, so the same cached rerun, with a first run that skips the alpha searches (on a CPU
# without VNNI this branch's search GEMMs take longer than the rest of the demo together).
DEMO_FIXED_ALPHA = ["smooth.alpha=0.8", "export.candidates.1.smoothing.alpha=0.8"]
SCENARIOS = {"tiny": TINY, "demo": [], "demo-fixed-alpha": DEMO_FIXED_ALPHA}
CHILD = """
import json, sys
import sq_trt
from sq_trt.cli import main
code = main(sys.argv[2:])
heavy = sorted(name for name in json.loads(sys.argv[1]) if name in sys.modules)
print(json.dumps({"code": code, "imported": heavy, "sq_trt": sq_trt.__file__}), file=sys.stderr)
"""
# --preflight-only: the recipe's checks alone (what the old code spent a cached rerun on), no stage planned.
CHILD_PREFLIGHT = """
import json, sys
import sq_trt
from sq_trt.pipeline.stages import preflight
from sq_trt.pipeline.recipe import load_recipe
args = sys.argv[2:]
out = args[args.index("--out") + 1]
overrides = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
recipe = load_recipe(args[args.index("--recipe") + 1], [f"work_dir={out}", f"engines_dir={out}/engines", *overrides])
preflight(recipe, recipe.resolved_work_dir, recipe.resolved_engines_dir)
heavy = sorted(name for name in json.loads(sys.argv[1]) if name in sys.modules)
print(json.dumps({"code": 0, "imported": heavy, "sq_trt": sq_trt.__file__}), file=sys.stderr)
"""


def host() -> dict[str, Any]:
    """CPU model and the SIMD flags that matter here, core count, Python."""
    model, flags = "", set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name") and not model:
            model = line.split(":", 1)[1].strip()
        if line.startswith("flags") and not flags:
            flags = set(line.split(":", 1)[1].split())
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
    return {
        "cpu": model,
        "flags": [f for f in wanted if f in flags],
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "shared": "yes: other sessions run on the same 2 cores (see loadavg per run)",
    }


def one_run(
    checkout: Path, work: Path, overrides: list[str], env: dict[str, str], child: str = CHILD
) -> dict[str, Any]:
    """One ``sq-trt pipeline`` (or its preflight alone) in a fresh interpreter; wall, CPU, statuses and imports."""
    argv = ["pipeline", "--recipe", str(RECIPE), "--quiet", "--out", str(work)]
    for override in overrides:
        argv += ["--set", override]
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", child, json.dumps(HEAVY), *argv],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"run failed in {checkout}:\n{done.stderr[-3000:]}")
    reported = json.loads(done.stderr.rstrip("\n").rsplit("\n", 1)[-1])
    run = {
        "wall_s": round(wall, 3),
        "cpu_s": round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 3),
        "loadavg_1min": round(load, 2),
        "exit_code": reported["code"],  # 3: the gate failed (the rerun's work is the same)
        "imported": reported["imported"],
        "sq_trt": reported["sq_trt"],
    }
    if child == CHILD:
        stages = json.loads((work / "pipeline_summary.json").read_text())["stages"]
        run.update(statuses=sorted({s["status"] for s in stages}), stages=len(stages))
    return run


def figures(runs: list[dict[str, Any]]) -> dict[str, float]:
    walls = [r["wall_s"] for r in runs]
    cpus = [r["cpu_s"] for r in runs]
    return {
        "wall_s_median": round(statistics.median(walls), 3),
        "wall_s_min": min(walls),
        "wall_s_max": max(walls),
        "cpu_s_median": round(statistics.median(cpus), 3),
        "cpu_s_min": min(cpus),
        "loadavg_1min_median": round(statistics.median(r["loadavg_1min"] for r in runs), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--checkout", action="append", default=[], help="LABEL=PATH (default: after=this one)")
    parser.add_argument("--work", default="/tmp/sq-trt-cached-rerun", help="work dirs go to WORK/<scenario>-<label>")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-bytecode-cache", action="store_true", help="keep PYTHONDONTWRITEBYTECODE if set")
    parser.add_argument(
        "--preflight-only", action="store_true", help="time the recipe's preflight alone (no fill, no stage)"
    )
    parser.add_argument("--result", help="default: bench/results/cached_rerun_<scenario>.json")
    args = parser.parse_args()
    checkouts = dict(c.split("=", 1) for c in args.checkout) or {"after": str(ROOT)}
    env = dict(os.environ)
    if not args.no_bytecode_cache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    overrides = SCENARIOS[args.scenario]
    works = {label: Path(args.work) / f"{args.scenario}-{label}" for label in checkouts}
    child = CHILD_PREFLIGHT if args.preflight_only else CHILD
    fills = {label: one_run(Path(path), works[label], overrides, env, child) for label, path in checkouts.items()}
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in checkouts}
    for _ in range(args.repeats):
        for label, path in checkouts.items():
            run = one_run(Path(path), works[label], overrides, env, child)
            if not set(run.get("statuses", ["reused"])) <= {"reused", "skipped"}:
                raise SystemExit(f"{label}: a rerun ran stages ({run['statuses']}); the cache was not reused")
            runs[label].append(run)
    command = "python bench/bench_cached_rerun.py " + " ".join(sys.argv[1:])
    result = {
        "command": command,
        "pipeline": "sq-trt pipeline --recipe builders/smollm2-135m.yaml --quiet --out <work> "
        + " ".join(f"--set {o!r}" for o in overrides),
        "host": host(),
        "bytecode_cache": not args.no_bytecode_cache or "PYTHONDONTWRITEBYTECODE" not in os.environ,
        "checkouts": {
            label: {"path": path, "fill_run": fills[label], "figures": figures(runs[label]), "runs": runs[label]}
            for label, path in checkouts.items()
        },
    }
    suffix = "_preflight" if args.preflight_only else ""
    out = Path(args.result or RESULTS / f"cached_rerun_{args.scenario}{suffix}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({label: c["figures"] for label, c in result["checkouts"].items()}, indent=2))


if __name__ == "__main__":
    main()
