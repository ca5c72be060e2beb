"""Run a chain of stages with content-addressed reuse of their artifacts.

Each :class:`Stage` writes one artifact directory (atomically, with its
``manifest.json``). Before running a stage the runner computes its *cache key*:
a hash of the recipe values the stage reads, the fingerprints of the artifacts
it consumes and the source code of the modules that implement it. A stage is
reused when the record of its last successful run (``<work>/.pipeline/<stage>.json``)
holds the same key and its artifact still carries the fingerprint recorded
then; otherwise it runs. The record is deleted before a stage runs and written
only after its artifact is complete, so an interrupted stage (exception,
Ctrl-C, power loss) never leaves an artifact a rerun would trust.

A rerun after a change in one section therefore repeats only the stages that
read it and those downstream whose inputs actually changed (a stage that
reproduces a byte-identical artifact keeps its fingerprint, and its consumers
are reused).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Self

from sq_trt import __version__
from sq_trt.artifacts import MANIFEST_NAME, atomic_write_text, hash_file, hash_json, load_manifest
from sq_trt.errors import ArtifactError, ConfigError

STAGE_KINDS: tuple[str, ...] = ("calibrate", "smooth", "export", "build", "compare", "report")
RECORDS_DIR = ".pipeline"
Status = Literal["reused", "ran", "skipped"]
Hook = Callable[[str, str], None]


class StageSkipped(Exception):
    """Raised by a stage's ``run`` when it does not apply here (the reason is printed)."""


@dataclass(frozen=True)
class Stage:
    """One step of a pipeline.

    Attributes:
        name: Unique name (``export/sq-per-token``); also names its cache record.
        kind: One of :data:`STAGE_KINDS` (what ``--from`` selects).
        path: The artifact directory the stage writes.
        run: Writes the artifact at ``path`` (atomically); may raise :class:`StageSkipped`.
        config: The recipe values the stage reads (JSON-serialisable).
        after: Names of the stages whose artifacts it consumes.
        code: Modules (or packages) whose source is part of the cache key.
        parallel: May run at the same time as the parallel stages next to it in the list (see
            :func:`run_stages`'s ``jobs``). For independent work that releases the GIL and uses
            about one core each, such as TensorRT-RTX engine builds.
    """

    name: str
    kind: str
    path: Path
    run: Callable[[], Any]
    config: Mapping[str, Any] = field(default_factory=dict)
    after: tuple[str, ...] = ()
    code: tuple[str, ...] = ()
    parallel: bool = False


@dataclass
class StageReport:
    """What happened to one stage in one run.

    ``peak_rss_mib`` and ``cpu_s`` are the whole process's while the stage ran, so they include
    the parallel stages running at the same time (``parallel`` marks the stages that may have),
    and exclude child processes (a parallel engine build runs in its own).
    """

    name: str
    kind: str
    status: Status
    wall_s: float
    peak_rss_mib: float | None
    path: str
    detail: str = ""
    cpu_s: float = 0.0
    parallel: bool = False


# ----------------------------------------------------------------------------- fingerprints


_CODE_HASHES: dict[str, str] = {}


def code_hash(module: str) -> str:
    """Hash of a module's source (a package: every ``.py`` file under it), cached per process."""
    if module not in _CODE_HASHES:
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            raise ConfigError(f"cannot locate module {module!r} to fingerprint it")
        origin = Path(spec.origin)
        files = sorted(origin.parent.rglob("*.py")) if origin.name == "__init__.py" else [origin]
        _CODE_HASHES[module] = hash_json(
            {f.relative_to(origin.parent).as_posix(): hash_file(f) for f in files}
        )
    return _CODE_HASHES[module]


def artifact_fingerprint(path: Path) -> str:
    """The fingerprint of an artifact directory's manifest (stage, config, inputs, file hashes).

    Raises:
        ArtifactError: No readable manifest, or a file it lists is missing.
    """
    manifest = load_manifest(path)
    missing = [rel for rel in manifest.files if not (path / rel).is_file()]
    if missing:
        raise ArtifactError(f"{path}: {missing[0]} listed in {MANIFEST_NAME} is missing")
    return manifest.fingerprint


def file_stats(path: Path) -> dict[str, list[int]]:
    """``relative path -> [size, mtime_ns]`` of every file an artifact's manifest lists."""
    manifest = load_manifest(path)
    stats = {}
    for rel in manifest.files:
        info = (path / rel).stat()
        stats[rel] = [info.st_size, info.st_mtime_ns]
    return stats


def verify_unchanged(path: Path, recorded: dict[str, list[int]]) -> bool:
    """Whether an artifact's files still hold what its manifest says.

    Files whose size and modification time match the record are trusted (as make
    does); any other file is re-hashed against the manifest.
    """
    manifest = load_manifest(path)
    for rel, expected in manifest.files.items():
        file = path / rel
        if not file.is_file():
            return False
        info = file.stat()
        if recorded.get(rel) == [info.st_size, info.st_mtime_ns]:
            continue
        if hash_file(file) != expected:
            return False
    return True


def _record_path(work_dir: Path, name: str) -> Path:
    return work_dir / RECORDS_DIR / (name.replace("/", "__") + ".json")


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


# ----------------------------------------------------------------------------- memory


class _PeakRss:
    """Samples this process's resident set size in a thread; ``peak_mib`` after exit."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self.peak_pages = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def _pages() -> int:
        try:
            with open("/proc/self/statm") as handle:
                return int(handle.read().split()[1])
        except (OSError, ValueError, IndexError):
            return 0

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak_pages = max(self.peak_pages, self._pages())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> Self:
        self.peak_pages = self._pages()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_pages = max(self.peak_pages, self._pages())

    @property
    def peak_mib(self) -> float | None:
        if self.peak_pages == 0:
            return None
        return self.peak_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


# ----------------------------------------------------------------------------- the runner


def _log(message: str) -> None:
    if "tqdm" not in sys.modules:  # no progress bar to write around: a cached run need not import tqdm
        print(message, file=sys.stderr, flush=True)
        return
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)


def check_stage_graph(stages: Sequence[Stage]) -> None:
    """Refuse bugs: unknown kinds, duplicates, consumers before producers, parallel stages consuming a neighbour."""
    seen: set[str] = set()
    group: set[str] = set()  # the parallel stages just before this one
    for stage in stages:
        assert stage.kind in STAGE_KINDS, f"stage {stage.name} has unknown kind {stage.kind}"
        assert stage.name not in seen, f"duplicate stage {stage.name}"
        missing = [dep for dep in stage.after if dep not in seen]
        assert not missing, f"stage {stage.name} consumes {missing} before they run"
        group = group if stage.parallel else set()
        assert not group & set(stage.after), f"parallel stage {stage.name} consumes one it runs beside"
        seen.add(stage.name)
        if stage.parallel:
            group.add(stage.name)


Jobs = int | Callable[[Sequence[Stage]], int]


def run_stages(
    stages: Sequence[Stage],
    work_dir: Path,
    *,
    from_kind: str | None = None,
    hook: Hook | None = None,
    log: Callable[[str], None] = _log,
    jobs: Jobs = 1,
) -> list[StageReport]:
    """Run (or reuse) every stage in order; consecutive ``parallel`` stages run together.

    A run of consecutive parallel stages (none consuming another) is one group: its stages to
    run go on ``jobs`` threads, and the next stage starts when the whole group is done. When a
    stage of the group fails, the ones not started are cancelled and the running ones are
    waited for (they complete and record their artifacts, as if run in order); the first
    failure in stage order is raised.

    Args:
        stages: The stages, each after the ones it consumes.
        work_dir: Holds the cache records (``.pipeline/``).
        from_kind: Force every stage of this kind and the kinds after it to run.
        hook: Test hook called as ``hook(event, stage_name)`` with event ``"start"``
            (before the stage runs) and ``"written"`` (its artifact is complete,
            its cache record not yet written).
        log: Where progress lines go.
        jobs: Threads for a parallel group, or a function of the group's stages to run that
            returns it (called when the group starts, so it can look at their inputs).

    Returns:
        One report per stage, in the order of ``stages``.

    Raises:
        ConfigError: ``from_kind`` is not a stage kind.
    """
    check_stage_graph(stages)
    if from_kind is not None and from_kind not in STAGE_KINDS:
        raise ConfigError(f"--from {from_kind!r} is not a stage; expected one of {', '.join(STAGE_KINDS)}")
    forced_from = STAGE_KINDS.index(from_kind) if from_kind is not None else len(STAGE_KINDS)
    fingerprints: dict[str, str] = {}
    reports: dict[str, StageReport] = {}
    group: list[tuple[Stage, str, Callable[[], tuple[str, StageReport]]]] = []
    for index, stage in enumerate(stages, start=1):
        if group and not stage.parallel:
            _run_group(group, jobs, fingerprints, reports, log)
            group = []
        key = _cache_key(stage, {dep: fingerprints[dep] for dep in stage.after})
        record_path = _record_path(work_dir, stage.name)
        prefix = f"[{index}/{len(stages)}] {stage.name}"
        forced = STAGE_KINDS.index(stage.kind) >= forced_from
        reused = None if forced else _reusable(record_path, key, stage.path)
        if reused is not None:
            log(f"{prefix}: reused {stage.path}")
            fingerprints[stage.name] = reused
            reports[stage.name] = StageReport(stage.name, stage.kind, "reused", 0.0, None, str(stage.path))
            continue
        run = functools.partial(_run_stage, stage, key, record_path, prefix, hook, log)
        if stage.parallel:
            group.append((stage, prefix, run))
            continue
        log(f"{prefix}: running -> {stage.path}")
        fingerprints[stage.name], reports[stage.name] = run()
    _run_group(group, jobs, fingerprints, reports, log)
    return [reports[stage.name] for stage in stages]


def _run_group(
    group: Sequence[tuple[Stage, str, Callable[[], tuple[str, StageReport]]]],
    jobs: Jobs,
    fingerprints: dict[str, str],
    reports: dict[str, StageReport],
    log: Callable[[str], None],
) -> None:
    """Run a parallel group's stages on ``jobs`` threads; the first failure (in order) is raised."""
    if not group:
        return
    threads = max(1, min(len(group), jobs if isinstance(jobs, int) else jobs([s for s, _, _ in group])))
    if threads == 1:  # in order, on this thread: exactly like non-parallel stages
        for stage, prefix, run in group:
            log(f"{prefix}: running -> {stage.path}")
            fingerprints[stage.name], reports[stage.name] = run()
        return
    for stage, prefix, _ in group:
        log(f"{prefix}: running -> {stage.path} ({threads} at a time)")
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sq-trt-stage")
    futures = [pool.submit(run) for _, _, run in group]
    try:
        wait(futures, return_when=FIRST_EXCEPTION)
    finally:
        # A failure (or Ctrl-C here) cancels the stages not started; the running ones finish.
        pool.shutdown(wait=True, cancel_futures=True)
    for (stage, _, _), future in zip(group, futures, strict=True):
        if not future.cancelled():
            fingerprints[stage.name], reports[stage.name] = future.result()  # raises its failure


def _cache_key(stage: Stage, inputs: Mapping[str, str]) -> str:
    """What decides reuse: the stage's kind and config, its inputs' fingerprints, its code, sq-trt's version."""
    return hash_json(
        {
            "kind": stage.kind,
            "config": stage.config,
            "inputs": dict(inputs),
            "code": {module: code_hash(module) for module in stage.code},
            "version": __version__,
        }
    )


def _run_stage(
    stage: Stage, key: str, record_path: Path, prefix: str, hook: Hook | None, log: Callable[[str], None]
) -> tuple[str, StageReport]:
    """Run one stage and write its cache record after its artifact; returns (fingerprint, report)."""
    # No record while the stage runs: an interrupted run leaves nothing a rerun would trust.
    with contextlib.suppress(FileNotFoundError):
        record_path.unlink()
    start = time.perf_counter()
    cpu_start = time.process_time()
    with _PeakRss() as rss:
        if hook is not None:
            hook("start", stage.name)
        try:
            stage.run()
        except StageSkipped as skipped:
            reason = str(skipped)
            wall = time.perf_counter() - start
            log(f"{prefix}: skipped ({reason})")
            report = StageReport(
                stage.name, stage.kind, "skipped", wall, rss.peak_mib, "-", reason, parallel=stage.parallel
            )
            return hash_json({"skipped": reason}), report
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    fingerprint = artifact_fingerprint(stage.path)
    if hook is not None:
        hook("written", stage.name)
    record = {
        "stage": stage.name,
        "key": key,
        "fingerprint": fingerprint,
        "path": str(stage.path),
        "files": file_stats(stage.path),
    }
    atomic_write_text(record_path, json.dumps(record, indent=2, sort_keys=True) + "\n")
    peak = f", peak RSS {rss.peak_mib:.0f} MiB" if rss.peak_mib else ""
    log(f"{prefix}: ran in {wall:.1f} s{peak}")
    return fingerprint, StageReport(
        stage.name, stage.kind, "ran", wall, rss.peak_mib, str(stage.path), cpu_s=cpu, parallel=stage.parallel
    )


def _reusable(record_path: Path, key: str, path: Path) -> str | None:
    """The artifact's fingerprint when the record says it was made from ``key`` and it is intact."""
    record = _read_record(record_path)
    if record is None or record.get("key") != key:
        return None
    try:
        fingerprint = artifact_fingerprint(path)
        intact = verify_unchanged(path, record.get("files") or {})
    except (ArtifactError, OSError):
        return None
    return fingerprint if intact and fingerprint == record.get("fingerprint") else None


# ----------------------------------------------------------------------------- summary


def format_summary(reports: Sequence[StageReport]) -> str:
    """A plain-text table: stage, status, wall time, peak RSS, artifact (or skip reason)."""
    rows = [("stage", "status", "wall s", "peak RSS MiB", "artifact")]
    for r in reports:
        rss = f"{r.peak_rss_mib:.0f}" if r.peak_rss_mib is not None else "-"
        where = r.path if r.status != "skipped" else f"- ({r.detail})"
        status = f"{r.status} (parallel)" if r.parallel else r.status
        rows.append((r.name, status, f"{r.wall_s:.1f}", rss, where))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for i, row in enumerate(rows):
        lines.append(
            "  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)) + "  " + row[4]
        )
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 8)
    total = sum(r.wall_s for r in reports)
    overlap = " (parallel stages overlap each other)" if any(r.parallel for r in reports) else ""
    lines.append(f"total stage time {total:.1f} s{overlap}")
    return "\n".join(lines)


def write_summary(path: Path, reports: Sequence[StageReport], extra: Mapping[str, Any]) -> None:
    """Write the run's stage table and results as JSON (atomically)."""
    payload = {"stages": [asdict(r) for r in reports], **extra}
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")

