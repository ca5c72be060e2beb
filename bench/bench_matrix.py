"""Benchmark of ``sq-trt matrix`` (not a test): one Ray worker vs two local nodes, and the cached rerun.

Runs a matrix recipe (default: builders/matrix-demo.yaml, restricted with ``--models``) three
times on this machine: on a one-node Ray cluster with one CPU that carries both targets'
resources ("one worker"), then on two nodes with one CPU each, one per target ("two nodes"),
each with a fresh store; then the two-node matrix again from its store with no Ray cluster
("cached rerun": as the CLI, which starts Ray only when a cell is missing). Reports
wall seconds and CPU seconds: the driver's own, the Ray processes' (every process under the
driver at the end of the run, with their reaped children), and the tasks' own (summed from
their results, including their engine-build subprocesses).

    python bench/bench_matrix.py [--recipe builders/matrix-demo.yaml] [--models tiny-llama] \
        [--out /tmp/bench-matrix] [--result bench/results/matrix.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _tree_cpu() -> float:
    """CPU seconds of every live process under this one (Ray's raylets, workers, GCS) and their reaped children."""
    import psutil

    total = 0.0
    for proc in psutil.Process().children(recursive=True):
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def _start_cluster(nodes: int, resources: dict[str, float]) -> Any:
    from ray.cluster_utils import Cluster

    if nodes == 1:
        return Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": resources})
    names = list(resources)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {names[0]: 1.0}})
    for name in names[1:]:
        cluster.add_node(num_cpus=1, resources={name: 1.0})
    return cluster


def _one_run(args: argparse.Namespace, label: str, nodes: int, store: Path, overrides: list[str]) -> dict[str, Any]:
    """One matrix run on ``nodes`` local Ray nodes (0: none, as the CLI when every cell is in the store)."""
    import ray

    from sq_trt.matrix.config import load_matrix
    from sq_trt.matrix.stage import run as run_matrix

    config, recipes = load_matrix(args.recipe, [*overrides, f"store={store}", f"work_dir={args.out / label}"])
    resources = {t.placement.resource: 1.0 for t in config.targets if t.placement.resource}
    wall, cpu = time.perf_counter(), time.process_time()
    cluster = _start_cluster(nodes, resources) if nodes else None
    if cluster is not None:
        ray.init(address=cluster.address, log_to_driver=False, include_dashboard=False)
    try:
        if cluster is not None:
            cluster.wait_for_nodes()
        result = run_matrix(config, recipes=recipes, log=lambda line: None)
        ray_cpu = _tree_cpu()
    finally:
        if cluster is not None:
            ray.shutdown()
            cluster.shutdown()
    cells = result.cells
    return {
        "label": label,
        "nodes": nodes,
        "cells": len(cells),
        "ran": sum(not c.get("cached") for c in cells),
        "failed": len(result.failed),
        "gate_passed": sum(bool(c.get("passed")) for c in cells),
        "wall_s": round(time.perf_counter() - wall, 1),
        "driver_cpu_s": round(time.process_time() - cpu, 1),
        "ray_processes_cpu_s": round(ray_cpu, 1),
        "tasks_cpu_s": round(sum(c.get("cpu_s", 0.0) for c in cells if not c.get("cached")), 1),
        "report": str(result.report),
    }


def bench(args: argparse.Namespace) -> dict[str, Any]:
    """The three runs; nothing is reused between the first two (fresh stores)."""
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    from sq_trt.matrix.config import read_matrix_file

    models = read_matrix_file(args.recipe)["models"]
    chosen = [m for m in models if not args.models or m["name"] in args.models]
    keep = [f"models={json.dumps(chosen)}"]
    runs = [
        _one_run(args, "one-worker", 1, args.out / "store-one", keep),
        _one_run(args, "two-nodes", 2, args.out / "store-two", keep),
        _one_run(args, "cached-rerun", 0, args.out / "store-two", keep),
    ]
    return {
        "recipe": str(args.recipe),
        "models": [m["name"] for m in chosen],
        "runs": runs,
        "cpu": _cpu_model(),
        "cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "shared_machine": "yes: other engineers' jobs ran on the same 2 cores",
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    """Parse the flags, run the benchmark, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, default=ROOT / "builders" / "matrix-demo.yaml")
    parser.add_argument("--models", nargs="*", default=[], help="model names of the recipe to keep (default: all)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench-matrix"))
    parser.add_argument("--result", type=Path, default=ROOT / "bench" / "results" / "matrix.json")
    args = parser.parse_args()
    args.out = args.out.resolve()
    payload = bench(args)
    args.result.parent.mkdir(parents=True, exist_ok=True)
    args.result.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
