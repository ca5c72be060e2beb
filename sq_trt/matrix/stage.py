"""``sq-trt matrix``'s driver: plan, look in the store, submit Ray tasks, show the live table, write the report.

Ray does the scheduling, placement, retries and transport. Every cell whose key the store
already holds (verified) is reused; the rest run as Ray tasks: a model's front end once (asking
Ray for the memory the export guard estimates), then each of its cells on a node of its target.
A cell that keeps failing is marked failed with its error and the others go on; Ctrl-C cancels
every task still pending. The cells' reports are copied next to the matrix report.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sq_trt.errors import ConfigError, MissingDependencyError
from sq_trt.matrix import pipeline_adapter as pipeline
from sq_trt.matrix import tasks
from sq_trt.matrix.config import MatrixConfig
from sq_trt.matrix.live import LiveTable
from sq_trt.matrix.plan import Cell, MatrixPlan, plan_matrix
from sq_trt.matrix.report import write_matrix_report
from sq_trt.matrix.store import ArtifactStore, StoreRefused

Hook = Callable[[str, str, dict[str, Any]], None]


@dataclass
class MatrixResult:
    """What one matrix run did: every cell's result (``status`` done / failed), the report's path."""

    cells: list[dict[str, Any]]
    report: Path
    wall_s: float
    events: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    @property
    def failed(self) -> list[dict[str, Any]]:
        """The cells that failed."""
        return [c for c in self.cells if c["status"] == "failed"]


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise MissingDependencyError(
            f"sq-trt matrix runs on Ray, which is not installed ({exc}); install the cluster extra: "
            "pip install -e '.[cluster]'"
        ) from None
    return ray


def _connect(ray: Any, config: MatrixConfig) -> bool:
    """Join the configured cluster, or start a local instance; True when this call started it.

    A local instance advertises the resource of every TensorRT-RTX target placed by one (an RTX
    engine builds ahead of time on any CPU, so this machine stands for each of them); TensorRT
    proper targets need nodes with their GPU (``--address``).
    """
    if ray.is_initialized():
        return False
    resources = None
    if config.address is None:
        cpus = len(os.sched_getaffinity(0))
        resources = {
            t.placement.resource: cpus * t.placement.amount
            for t in config.targets
            if t.backend == "tensorrt_rtx" and t.placement.resource is not None
        }
    ray.init(
        address=config.address,
        resources=resources or None,
        log_to_driver=False,
        include_dashboard=False,
        configure_logging=False,
    )
    return True


def check_placement(ray: Any, config: MatrixConfig) -> None:
    """Refuse a target no node of the cluster can run (before anything is submitted).

    Raises:
        ConfigError: Naming the target and what its placement asks for.
    """
    available = ray.cluster_resources()
    labels = [node.get("Labels") or {} for node in ray.nodes() if node.get("Alive")]
    for target in config.targets:
        p = target.placement
        missing = []
        if p.resource is not None and available.get(p.resource, 0) < p.amount:
            missing.append(f"resource {p.resource!r} >= {p.amount}")
        if p.accelerator_type is not None and f"accelerator_type:{p.accelerator_type}" not in available:
            missing.append(f"accelerator_type {p.accelerator_type!r}")
        if p.gpus and available.get("GPU", 0) < p.gpus:
            missing.append(f"{p.gpus} GPU")
        if p.labels and not any(all(node.get(k) == v for k, v in p.labels.items()) for node in labels):
            missing.append(f"labels {p.labels}")
        if missing:
            raise ConfigError(
                f"target {target.name!r}: no node of the Ray cluster offers {' and '.join(missing)}; start its "
                "nodes with that resource or label (docs/MATRIX.md), or fix targets.*.placement"
            )


def run(
    config: MatrixConfig,
    *,
    recipes: dict[str, pipeline.Recipe],
    out: Path | None = None,
    force: bool = False,
    hook: Hook | None = None,
    log: Callable[[str], None] | None = None,
) -> MatrixResult:
    """Run (or reuse) every cell of a matrix and write its report.

    Args:
        config: The matrix recipe.
        recipes: Each model's validated pipeline recipe (:func:`sq_trt.matrix.config.load_matrix`).
        out: Where the report goes (default: the recipe's work directory).
        force: Drop the store entries of this matrix first, so everything runs again.
        hook: Called on the driver with every task event ``(label, event, info)`` as it arrives.
        log: Where the live table's lines go (default: stderr).

    Returns:
        Every cell's result and the report's path.
    """
    ray = _ray()
    out = (out or config.resolved_work_dir).resolve()
    store = ArtifactStore(config.resolved_store)
    plan = plan_matrix(config, recipes)
    if force:
        for key in plan.fronts:
            store.drop(tasks.FRONT, key)
        for cell in plan.cells:
            store.drop(tasks.CELL, cell.key)
    started = time.perf_counter()
    table = LiveTable([c.label for c in plan.cells], log=log or _stderr)
    results = _cached_cells(store, plan, table)
    if len(results) < len(plan.cells):  # a fully cached rerun never starts Ray
        owns = _connect(ray, config)
        try:
            check_placement(ray, config)
            results |= _run_missing(ray, config, store, plan, results, table, hook)
        finally:
            if owns:
                ray.shutdown()
    cells = _collect(store, plan, results, out)
    wall = time.perf_counter() - started
    report = write_matrix_report(out, _payload(config, plan, cells, wall))
    table.finish(f"matrix report: {report}")
    return MatrixResult(cells, report, wall, table.events)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _cached_cells(store: ArtifactStore, plan: MatrixPlan, table: LiveTable) -> dict[str, dict[str, Any]]:
    """The cells the store already holds, verified; a refused entry is reported and left to rebuild."""
    found = {}
    for cell in plan.cells:
        meta = store.verify(tasks.CELL, cell.key)
        if meta is None:
            continue
        if "refused" in meta:
            table.note(f"{cell.label}: store entry refused ({meta['refused']}); rebuilding it")
            continue
        found[cell.label] = {**meta, "cached": True, "status": "done"}
        table.update(cell.label, "cached", meta)
    return found


def _run_missing(
    ray: Any,
    config: MatrixConfig,
    store: ArtifactStore,
    plan: MatrixPlan,
    done: dict[str, dict[str, Any]],
    table: LiveTable,
    hook: Hook | None,
) -> dict[str, dict[str, Any]]:
    """Submit the front ends and cells not in the store, and wait for them with the live table."""
    todo = [c for c in plan.cells if c.label not in done]
    if not todo:
        return {}
    progress = ray.remote(num_cpus=0)(tasks.Progress).remote()
    scratch = str(config.scratch_dir.resolve()) if config.scratch_dir is not None else None
    fronts = _submit_fronts(ray, config, store, plan, todo, progress, scratch, table)
    cell_fn = ray.remote(tasks.cell_task)
    refs = {}
    for cell in todo:
        options = {"num_cpus": config.cpus_per_task, "max_retries": config.retries, **cell.target.placement.ray_options()}
        refs[cell.label] = cell_fn.options(name=cell.label, **options).remote(
            cell, fronts[cell.front_key], store.url, scratch, progress
        )
        table.update(cell.label, "queued", {})
    running_fronts = [ref for ref in fronts.values() if isinstance(ref, ray.ObjectRef)]
    return _wait(ray, refs, progress, table, hook, cancel_too=running_fronts)


def _submit_fronts(
    ray: Any,
    config: MatrixConfig,
    store: ArtifactStore,
    plan: MatrixPlan,
    todo: list[Cell],
    progress: Any,
    scratch: str | None,
    table: LiveTable,
) -> dict[str, Any]:
    """Each needed front end: its verified store metadata, or the Ray task that makes it."""
    front_fn = ray.remote(tasks.front_task)
    fronts: dict[str, Any] = {}
    for key in dict.fromkeys(c.front_key for c in todo):
        job = plan.fronts[key]
        meta = store.verify(tasks.FRONT, key)
        if meta is not None and "refused" not in meta:
            fronts[key] = meta
            continue
        if meta is not None:
            table.note(f"{job.model}/front: store entry refused ({meta['refused']}); rebuilding it")
        memory = pipeline.front_memory_bytes(job.recipe)
        options = {"num_cpus": config.cpus_per_task, "max_retries": config.retries, **({"memory": memory} if memory else {})}
        fronts[key] = front_fn.options(name=f"{job.model}/front", **options).remote(job, store.url, scratch, progress)
    return fronts


def _wait(
    ray: Any, refs: dict[str, Any], progress: Any, table: LiveTable, hook: Hook | None, cancel_too: list[Any]
) -> dict[str, dict[str, Any]]:
    """Wait for every cell, updating the table from the progress actor; Ctrl-C cancels what is left.

    ``cancel_too``: the front-end tasks, cancelled with the cells on Ctrl-C (a finished one ignores it).
    """
    results: dict[str, dict[str, Any]] = {}
    pending = {ref: label for label, ref in refs.items()}
    seen = 0
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            events = ray.get(progress.since.remote(seen))
            seen += len(events)
            for label, event, info in events:
                table.update(label, event, info)
                if hook is not None:
                    hook(label, event, info)
            for ref in ready:
                label = pending.pop(ref)
                results[label] = _outcome(ray, ref)
                table.update(label, results[label]["status"], results[label])
    except KeyboardInterrupt:
        for ref in [*pending, *cancel_too]:
            ray.cancel(ref, force=True)
        table.finish(f"cancelled {len(pending)} pending cells; finished ones are in the store, a rerun does the rest")
        raise
    return results


def _outcome(ray: Any, ref: Any) -> dict[str, Any]:
    """A finished task's result, or ``{"status": "failed", "error": ...}`` with its cause in one line."""
    try:
        result: dict[str, Any] = ray.get(ref)
    except ray.exceptions.RayError as exc:  # a task's failure (after Ray's retries) is data for the report
        return {"status": "failed", "error": _one_line(exc)}
    return {**result, "status": "done"}


def _one_line(exc: BaseException) -> str:
    """The root cause of a task's failure (Ray wraps it, once per task it passed through), in one line."""
    cause: BaseException = exc
    while isinstance(inner := getattr(cause, "cause", None), BaseException) and inner is not cause:
        cause = inner
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else ''}"[:400]


def _collect(
    store: ArtifactStore, plan: MatrixPlan, results: dict[str, dict[str, Any]], out: Path
) -> list[dict[str, Any]]:
    """Each cell's result with its report copied to ``out/cells/<model>/<candidate>/<target>``."""
    cells = []
    for cell in plan.cells:
        result = {**results.get(cell.label, {"status": "failed", "error": "not run"})}
        result.update(model=cell.model, candidate=cell.candidate, target=cell.target.name, key=cell.key)
        if result["status"] == "done":
            dest = out / "cells" / cell.model / cell.candidate / cell.target.name
            try:
                tasks.fetch_cell_report(store, cell, dest)
            except StoreRefused as exc:  # altered after it was checked: a rerun rebuilds it
                result = {**result, "status": "failed", "error": str(exc)}
            else:
                result["report"] = (dest / "work" / "report" / "report.html").relative_to(out).as_posix()
        cells.append(result)
    return cells


def _payload(config: MatrixConfig, plan: MatrixPlan, cells: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    statuses = ["passed", "gate failed", "failed"]
    counts = dict.fromkeys(statuses, 0)
    for c in cells:
        counts["failed" if c["status"] == "failed" else "passed" if c.get("passed") else "gate failed"] += 1
    return {
        "schema": 1,
        "name": config.name,
        "description": config.description,
        "store": config.resolved_store,
        "wall_s": wall,
        "counts": counts,
        "targets": [
            {"name": t.name, "backend": t.backend, "where": _where(t.placement.ray_options())} for t in config.targets
        ],
        "fronts": {job.model + "@" + job.backend: key for key, job in plan.fronts.items()},
        "cells": cells,
    }


def _where(options: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in options.items())
