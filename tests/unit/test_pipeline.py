"""The stage runner's caching contract, on small stages that write real artifact directories.

These stages are plain functions writing a file through ``artifact_dir`` (the same
atomic writer every sq-trt stage uses), so the runner is exercised exactly as in
the pipeline, in milliseconds; the tiny-model end-to-end tests are in
``test_pipeline_tiny.py``.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sq_trt.artifacts import artifact_dir
from sq_trt.errors import ConfigError
from sq_trt.pipeline.runner import Stage, StageReport, StageSkipped, code_hash, format_summary, run_stages


class Chain:
    """Three stages a -> b -> c; each writes ``out.txt`` from its config and its input's content."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = {"a": {"x": 1}, "b": {"y": 2}, "c": {"z": 3}}
        self.calls: list[str] = []
        self.fail_inside: str | None = None
        self.skip: str | None = None

    def _write(self, name: str, upstream: str | None) -> None:
        self.calls.append(name)
        if self.skip == name:
            raise StageSkipped(f"{name} does not apply here")
        previous = (self.root / upstream / "out.txt").read_text() if upstream else ""
        with artifact_dir(self.root / name, stage=name, config=self.config[name]) as tmp:
            (tmp / "out.txt").write_text(previous + json.dumps(self.config[name]))
            if self.fail_inside == name:
                raise RuntimeError(f"{name} crashed half-way")

    def stages(self) -> list[Stage]:
        kinds = {"a": "calibrate", "b": "smooth", "c": "export"}
        ups = {"a": None, "b": "a", "c": "b"}
        return [
            Stage(
                name=n,
                kind=kinds[n],
                path=self.root / n,
                run=lambda n=n: self._write(n, ups[n]),
                config=self.config[n],
                after=(ups[n],) if ups[n] else (),
            )
            for n in ("a", "b", "c")
        ]

    def run(self, **kwargs: Any) -> dict[str, str]:
        self.calls.clear()
        reports = run_stages(self.stages(), self.root, log=lambda _: None, **kwargs)
        return {r.name: r.status for r in reports}


@pytest.fixture
def chain(tmp_path: Path) -> Chain:
    return Chain(tmp_path)


def test_first_run_runs_everything_and_rerun_reuses_everything(chain: Chain) -> None:
    assert chain.run() == {"a": "ran", "b": "ran", "c": "ran"}
    assert chain.run() == {"a": "reused", "b": "reused", "c": "reused"}
    assert chain.calls == []
    assert (chain.root / "c" / "out.txt").read_text() == '{"x": 1}{"y": 2}{"z": 3}'


def test_changing_a_stage_config_reruns_it_and_its_consumers_only(chain: Chain) -> None:
    chain.run()
    chain.config["b"] = {"y": 5}
    assert chain.run() == {"a": "reused", "b": "ran", "c": "ran"}
    assert (chain.root / "c" / "out.txt").read_text() == '{"x": 1}{"y": 5}{"z": 3}'
    chain.config["c"] = {"z": 4}
    assert chain.run() == {"a": "reused", "b": "reused", "c": "ran"}


def test_from_forces_that_kind_and_later(chain: Chain) -> None:
    chain.run()
    assert chain.run(from_kind="smooth") == {"a": "reused", "b": "ran", "c": "ran"}
    with pytest.raises(ConfigError, match="--from 'nope' is not a stage"):
        chain.run(from_kind="nope")


def test_identical_rerun_keeps_fingerprint_so_consumers_are_reused(chain: Chain) -> None:
    chain.run()
    # A rerun of `a` that writes the same bytes (forced by deleting its record) must not
    # invalidate `b` and `c`: their keys hold a's fingerprint, which did not change.
    (chain.root / ".pipeline" / "a.json").unlink()
    assert chain.run() == {"a": "ran", "b": "reused", "c": "reused"}


def test_interrupt_after_artifact_before_record_is_not_trusted(chain: Chain) -> None:
    chain.run()
    chain.config["b"] = {"y": 9}

    def interrupt(event: str, name: str) -> None:
        if (event, name) == ("written", "b"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        chain.run(hook=interrupt)
    # b's new artifact is complete on disk, but its record was never written: a rerun redoes b.
    assert not (chain.root / ".pipeline" / "b.json").exists()
    assert chain.run() == {"a": "reused", "b": "ran", "c": "ran"}


def test_interrupt_at_stage_start_leaves_old_artifact_untrusted(chain: Chain) -> None:
    chain.run()
    chain.config["b"] = {"y": 7}

    def interrupt(event: str, name: str) -> None:
        if (event, name) == ("start", "b"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        chain.run(hook=interrupt)
    chain.config["b"] = {"y": 2}  # back to the config the old artifact was made with
    # The old record was deleted before the stage started, so even the original config reruns b.
    assert chain.run()["b"] == "ran"


def test_crash_inside_a_stage_leaves_no_partial_directory(chain: Chain) -> None:
    chain.fail_inside = "b"
    with pytest.raises(RuntimeError, match="crashed half-way"):
        chain.run()
    assert not (chain.root / "b").exists()
    assert [p.name for p in chain.root.iterdir() if "partial" in p.name] == []
    chain.fail_inside = None
    assert chain.run() == {"a": "reused", "b": "ran", "c": "ran"}


def test_corrupt_modified_or_missing_artifact_is_rebuilt(chain: Chain) -> None:
    chain.run()
    (chain.root / "b" / "manifest.json").write_text("{broken")
    # b is rebuilt with identical bytes, so c (which reads b) stays valid.
    assert chain.run() == {"a": "reused", "b": "ran", "c": "reused"}
    (chain.root / "b" / "out.txt").write_text("tampered")
    assert chain.run() == {"a": "reused", "b": "ran", "c": "reused"}
    assert (chain.root / "b" / "out.txt").read_text() == '{"x": 1}{"y": 2}'
    (chain.root / "c" / "out.txt").unlink()
    assert chain.run()["c"] == "ran"


def test_skipped_stage_is_reported_with_its_reason(chain: Chain) -> None:
    chain.skip = "c"
    reports = run_stages(chain.stages(), chain.root, log=lambda _: None)
    assert [(r.name, r.status) for r in reports] == [("a", "ran"), ("b", "ran"), ("c", "skipped")]
    assert reports[2].detail == "c does not apply here"
    table = format_summary(reports)
    assert "c does not apply here" in table and "reused" not in table


def test_code_change_reruns_the_stage(chain: Chain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = tmp_path / "pkg_h7_code.py"
    module.write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    stages = chain.stages()
    with_code = [Stage(**{**s.__dict__, "code": ("pkg_h7_code",)}) if s.name == "b" else s for s in stages]
    run_stages(with_code, chain.root, log=lambda _: None)
    before = code_hash("pkg_h7_code")
    module.write_text(textwrap.dedent("VALUE = 2\n"))
    from sq_trt.pipeline import runner as pipeline

    pipeline._CODE_HASHES.pop("pkg_h7_code")  # a new process would see the new source
    sys.modules.pop("pkg_h7_code", None)
    assert code_hash("pkg_h7_code") != before
    statuses = {r.name: r.status for r in run_stages(with_code, chain.root, log=lambda _: None)}
    assert statuses == {"a": "reused", "b": "ran", "c": "reused"}  # b rewrote identical bytes


class Fork:
    """a -> (b, e: a parallel group) -> c, which reads both.

    With ``prove_overlap``, b and e each wait for the other to start: run one after the other
    they would time out, so a run that finishes proves the two ran at the same time.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started = {"b": threading.Event(), "e": threading.Event()}
        self.calls: list[str] = []
        self.fail: str | None = None
        self.prove_overlap = False
        self.groups: list[list[str]] = []

    def _write(self, name: str) -> None:
        self.calls.append(name)
        if name in self.started:
            self.started[name].set()
            other = self.started["e" if name == "b" else "b"]
            if (self.prove_overlap or self.fail) and not other.wait(timeout=10):
                raise RuntimeError(f"{name} ran alone")
        if self.fail == name:
            raise RuntimeError(f"{name} failed")
        if name == "e" and self.fail:
            time.sleep(0.5)  # still running when b fails
        with artifact_dir(self.root / name, stage=name, config={}) as tmp:
            text = "".join((self.root / up / "out.txt").read_text() for up in ("b", "e") if name == "c")
            (tmp / "out.txt").write_text(text + name)

    def stages(self, *, parallel: bool = True) -> list[Stage]:
        def stage(name: str, kind: str, after: tuple[str, ...], **kw: Any) -> Stage:
            run = functools.partial(self._write, name)
            return Stage(name=name, kind=kind, path=self.root / name, run=run, after=after, **kw)

        return [
            stage("a", "calibrate", ()),
            stage("b", "build", ("a",), parallel=parallel),
            stage("e", "build", ("a",), parallel=parallel),
            stage("c", "report", ("b", "e")),
        ]

    def jobs(self, group: Any) -> int:
        self.groups.append([stage.name for stage in group])
        return 2

    def run(self, **kwargs: Any) -> list[StageReport]:
        self.calls.clear()
        for event in self.started.values():
            event.clear()
        jobs = kwargs.pop("jobs", self.jobs)
        return run_stages(self.stages(**kwargs), self.root, log=lambda _: None, jobs=jobs)


def test_parallel_stages_run_at_the_same_time_and_their_consumer_waits_for_all(tmp_path: Path) -> None:
    fork = Fork(tmp_path)
    fork.prove_overlap = True
    reports = fork.run()
    assert [(r.name, r.status, r.parallel) for r in reports] == [
        ("a", "ran", False),
        ("b", "ran", True),
        ("e", "ran", True),
        ("c", "ran", False),
    ]
    assert (tmp_path / "c" / "out.txt").read_text() == "bec"  # c saw both finished artifacts
    assert fork.groups == [["b", "e"]]  # jobs was asked once, with the group's stages to run
    assert "(parallel)" in format_summary(reports)
    fork.prove_overlap = False
    assert [r.status for r in fork.run()] == ["reused"] * 4  # records written on the worker threads
    assert fork.groups == [["b", "e"]]  # nothing to run: no group


def test_one_job_runs_a_parallel_group_in_order(tmp_path: Path) -> None:
    fork = Fork(tmp_path)
    fork.run(jobs=1)
    assert fork.calls == ["a", "b", "e", "c"]


def test_a_failure_in_a_group_lets_the_others_finish_and_is_raised(tmp_path: Path) -> None:
    fork = Fork(tmp_path)
    fork.fail = "b"
    with pytest.raises(RuntimeError, match="b failed"):
        fork.run()
    assert "c" not in fork.calls
    # e was running beside b: it finished and recorded its artifact, b left none.
    assert (tmp_path / ".pipeline" / "e.json").exists() and not (tmp_path / ".pipeline" / "b.json").exists()
    fork.fail = None
    assert [r.status for r in fork.run()] == ["reused", "ran", "reused", "ran"]


def test_a_parallel_stage_may_not_consume_its_neighbour() -> None:
    from sq_trt.pipeline.runner import check_stage_graph

    def stage(name: str, after: tuple[str, ...]) -> Stage:
        return Stage(name=name, kind="build", path=Path(name), run=lambda: None, after=after, parallel=True)

    with pytest.raises(AssertionError, match="parallel stage y consumes one it runs beside"):
        check_stage_graph([stage("x", ()), stage("y", ("x",))])


def test_builds_are_parallel_and_their_jobs_follow_cores_memory_and_the_recipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sq_trt.export import stage as export_stage
    from sq_trt.pipeline.context import PipelineContext
    from sq_trt.pipeline.recipe import Recipe
    from sq_trt.pipeline.stages import build_jobs, plan_stages

    def context(**extra: Any) -> PipelineContext:
        recipe = Recipe.model_validate(
            {"kind": "pipeline", "name": "t", "work_dir": str(tmp_path), "model": {"source": "tiny:llama"}, **extra}
        )
        return PipelineContext(recipe, progress=False, log=lambda _: None)

    ctx = context()
    builds = [s for s in plan_stages(ctx) if s.kind == "build"]
    assert builds and all(s.parallel for s in builds)
    assert not any(s.parallel for s in plan_stages(ctx) if s.kind != "build")
    if ctx.build_plan().name != "tensorrt_rtx":
        pytest.skip(f"the automatic choice is for TensorRT-RTX builds; this machine builds with {ctx.build_plan().name}")
    export = tmp_path / builds[0].after[0]
    export.mkdir(parents=True)
    (export / "model.fp16.onnx").write_bytes(b"x" * 1000)
    (export / "model.fp16.onnx.data").write_bytes(b"x" * 99_000)  # one model: file plus external data
    monkeypatch.setattr(export_stage, "available_memory_bytes", lambda: 64 * 2**30)
    cores = len(os.sched_getaffinity(0))
    assert build_jobs(ctx, builds) == cores  # the group's own size caps it later, in run_stages
    # Memory for one build only: 512 MiB + 6 x 100,000 bytes each.
    monkeypatch.setattr(export_stage, "available_memory_bytes", lambda: 512 * 2**20 + 6 * 100_000)
    assert build_jobs(ctx, builds) == 1
    monkeypatch.setattr(export_stage, "available_memory_bytes", lambda: 64 * 2**30)
    assert build_jobs(context(build_jobs=1), builds) == 1
    assert build_jobs(context(build_jobs=3), builds) == 3


def test_float_exports_are_traced_once_per_architecture_and_copied() -> None:
    import copy

    import torch

    from sq_trt.export.stage import FloatGraphs
    from sq_trt.models.loading import load_model

    loaded = load_model("tiny:llama")
    other = copy.deepcopy(loaded.model)  # another model of the architecture, other weights
    with torch.no_grad():
        other.model.norm.weight.mul_(2.0)
    graphs = FloatGraphs()
    a = graphs.graph(loaded.model, loaded.spec, with_past=False, dtype="float32", opset=20)
    b = graphs.graph(loaded.model, loaded.spec, with_past=False, dtype="float32", opset=20)
    c = graphs.graph(other, loaded.spec, with_past=False, dtype="float32", opset=20)
    b.graph.name = "edited by one export"
    assert (graphs.traces, graphs.reused, graphs.last) == (1, 2, "reused")
    assert a is not b and a.graph.name != b.graph.name  # copies: one export's edits never reach another
    norm = {i.name: i.raw_data for i in c.graph.initializer}["model.model.norm.weight"]
    assert norm == (2.0 * loaded.model.model.norm.weight.detach()).numpy().tobytes()  # c has other's weights
    graphs.graph(other, loaded.spec, with_past=False, dtype="float16", opset=20)
    assert (graphs.traces, graphs.last) == (2, "fresh")  # another dtype is another graph
    unkept = FloatGraphs(keep=False)  # an offloaded model: nothing kept between candidates
    unkept.graph(loaded.model, loaded.spec, with_past=False, dtype="float32", opset=20)
    unkept.graph(loaded.model, loaded.spec, with_past=False, dtype="float32", opset=20)
    assert (unkept.traces, unkept.reused) == (2, 0)
