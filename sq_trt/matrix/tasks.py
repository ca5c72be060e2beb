"""What a Ray task of the matrix runs on its node: a front end or a cell, published to the store.

Plain functions (:func:`front_task`, :func:`cell_task`); :mod:`sq_trt.matrix.stage` wraps them
with ``ray.remote`` and the target's placement. Each first looks for its key in the store (another
run may have published it meanwhile), else runs the pipeline's stages in a node-local scratch
directory and publishes the result; the scratch directory is removed either way. Progress goes
to a :class:`Progress` actor (Ray's own calls, fire and forget).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sq_trt.errors import ArtifactError
from sq_trt.matrix import pipeline_adapter as pipeline
from sq_trt.matrix.plan import Cell, FrontJob
from sq_trt.matrix.store import ArtifactStore

FRONT = "front"
CELL = "cell"
CELL_FILE = "cell.json"


class Progress:
    """Collects the tasks' events (run as a Ray actor): ``(label, event, info)`` in arrival order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def report(self, label: str, event: str, info: dict[str, Any]) -> None:
        """Record one event (``running``, ``stage``, ``cached``)."""
        self.events.append((label, event, info))

    def since(self, index: int) -> list[tuple[str, str, dict[str, Any]]]:
        """The events after the first ``index``."""
        return self.events[index:]


def _where() -> dict[str, Any]:
    import ray

    return {"node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(), "pid": os.getpid()}


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _emit(progress: Any, label: str, event: str, info: dict[str, Any]) -> None:
    if progress is not None:
        progress.report.remote(label, event, info)


def front_task(job: FrontJob, store_url: str, scratch: str | None, progress: Any) -> dict[str, Any]:
    """Run (or find in the store) a model's front end; returns its metadata."""
    label = f"{job.model}/front"
    where = _where()
    _emit(progress, label, "running", where)
    store = ArtifactStore(store_url)
    found = store.verify(FRONT, job.key)
    if found is not None and "refused" not in found:
        _emit(progress, label, "cached", where)
        return {**found, "cached": True}
    start, cpu = time.perf_counter(), _cpu_seconds()
    with tempfile.TemporaryDirectory(prefix="sq-trt-front-", dir=scratch) as tmp:
        recipe = pipeline.front_recipe(job.recipe, Path(tmp))
        reports = pipeline.run_front_stages(recipe, job.backend, log=lambda line: None)
        meta = {
            **where,
            "model": job.model,
            "stages": [{"name": r.name, "status": r.status, "wall_s": r.wall_s} for r in reports],
            "wall_s": time.perf_counter() - start,
            "cpu_s": _cpu_seconds() - cpu,
        }
        store.publish(FRONT, job.key, Path(tmp), ["work"], meta)
    _emit(progress, label, "done", meta)
    return {**meta, "cached": False}


def cell_task(cell: Cell, front: dict[str, Any], store_url: str, scratch: str | None, progress: Any) -> dict[str, Any]:
    """Run (or find in the store) one cell; returns its summary (``cell.json``)."""
    where = _where()
    _emit(progress, cell.label, "running", where)
    store = ArtifactStore(store_url)
    found = store.verify(CELL, cell.key)
    if found is not None and "refused" not in found:
        _emit(progress, cell.label, "cached", where)
        return {**found, "cached": True}
    start, cpu = time.perf_counter(), _cpu_seconds()
    with tempfile.TemporaryDirectory(prefix="sq-trt-cell-", dir=scratch) as tmp:
        root = Path(tmp)
        store.fetch(FRONT, cell.front_key, root, only=cell.fetch)
        recipe = pipeline.cell_recipe(
            cell.recipe, cell.candidate, cell.target.backend, cell.target.compute_capabilities, root
        )
        reports, verdict = pipeline.run_cell_stages(recipe, _front_reused_hook(cell, progress), log=lambda line: None)
        summary = {
            **where,
            **_cell_results(cell, root, verdict),
            "stages": [{"name": r.name, "status": r.status, "wall_s": r.wall_s, "detail": r.detail} for r in reports],
            "wall_s": time.perf_counter() - start,
            "cpu_s": _cpu_seconds() - cpu,
        }
        (root / CELL_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
        store.publish(CELL, cell.key, root, ["engines", "work/compare", "work/report", CELL_FILE], summary)
    return {**summary, "cached": False}


def _front_reused_hook(cell: Cell, progress: Any) -> Callable[[str, str], None]:
    """Report each stage start; a front-end stage that would run again is refused (it was fetched to be reused)."""

    def hook(event: str, stage: str) -> None:
        if event != "start":
            return
        if stage.split("/", 1)[0].split("-", 1)[0] in pipeline.FRONT_KINDS:
            raise ArtifactError(
                f"{cell.label}: the front end's {stage} fetched from the store was not reusable here (its model "
                "files or code differ on this node); give every node the same model path, or a hub id"
            )
        _emit(progress, cell.label, "stage", {"stage": stage})

    return hook


def _cell_results(cell: Cell, root: Path, verdict: Any) -> dict[str, Any]:
    """The numbers the matrix report shows: gate, metrics, engine size and build time, inference time."""
    comparison = json.loads((root / "work" / "compare" / "comparison.json").read_text())
    engine = None
    manifest = root / "engines" / cell.candidate / "manifest.json"
    if manifest.is_file():
        engines = json.loads(manifest.read_text()).get("extra", {}).get("engines", {})
        built: dict[str, Any] = next(iter(engines.values()), {})
        engine = {k: built.get(k) for k in ("plan", "plan_bytes", "build_seconds", "backend", "backend_version")}
    return {
        "model": cell.model,
        "candidate": cell.candidate,
        "target": cell.target.name,
        "key": cell.key,
        "gate": verdict.to_json(),
        "passed": verdict.passed,
        "gate_detail": verdict.describe_failures(),
        "metrics": comparison["metrics"][cell.candidate]["summary"],
        # What the comparison ran: "onnx" (ONNX Runtime, CPU targets) or "plan" (the engine, TensorRT proper).
        "compared": next((c.get("kind") for c in comparison.get("candidates", []) if c.get("name") == cell.candidate), None),
        "inference_s": comparison.get("timing", {}).get("inference_s", {}).get(cell.candidate),
        "engine": engine,
    }


def fetch_cell_report(store: ArtifactStore, cell: Cell, dest: Path) -> None:
    """Copy a finished cell's report (and its summary) out of the store into ``dest`` (replaced)."""
    shutil.rmtree(dest, ignore_errors=True)
    store.fetch(CELL, cell.key, dest, only=("work/report", CELL_FILE))
