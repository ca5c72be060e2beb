"""`sq-trt matrix` on a two-node local Ray cluster: placement per target, a worker killed mid-build, reruns.

The nodes carry one custom resource each, standing for two GPU kinds that TensorRT-RTX builds for
on a CPU (Ampere 8.6 and Ada 8.9). One module-wide run of a tiny random Llama x those two targets x
three candidates; the run kills the worker of the first cell to start building (SIGKILL, as a lost
node would), which Ray retries. Later tests rerun the same matrix from its store.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray", reason="the `cluster` extra (ray) is not installed")
pytest.importorskip("tensorrt_rtx_libs", reason="TensorRT-RTX (the `rtx` extra) is not installed")

from ray.cluster_utils import Cluster

from sq_trt.matrix.config import load_matrix
from sq_trt.matrix.stage import MatrixResult
from sq_trt.matrix.stage import run as run_matrix

# About two minutes on two shared cores (a Ray cluster, a front end, seven cell runs): slow.
pytestmark = pytest.mark.integration

RECIPE = """\
kind: matrix
name: cluster-test
base: {base}
models:
  - name: tiny-llama
    source: tiny:llama
    set: [calibrate.samples=2, calibrate.seq_len=32, compare.samples=2, compare.seq_len=32,
          "build.profiles.0.seq=[1,32,64]", build.fp16_engine=false, smooth.alpha=0.5]
targets:
  - {{name: rtx-ampere, backend: tensorrt_rtx, compute_capabilities: ["8.6"], placement: {{resource: "target:rtx-ampere"}}}}
  - {{name: rtx-ada, backend: tensorrt_rtx, compute_capabilities: ["8.9"], placement: {{resource: "target:rtx-ada"}}}}
candidates:
  - {{name: naive-per-token, smooth: false, encoding: portable}}
  - {{name: sq-per-tensor, act_mode: per_tensor}}
  - {{name: sq-per-token, encoding: portable}}
gate: ["sq-per-token:ppl_increase_pct<=100"]
retries: 2
work_dir: {work}
scratch_dir: {scratch}
"""


class ClusterRun:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.recipe = root / "matrix.yaml"
        base = Path(__file__).resolve().parents[3] / "builders" / "smollm2-135m.yaml"
        (root / "scratch").mkdir()
        self.recipe.write_text(RECIPE.format(base=base, work=root / "work", scratch=root / "scratch"))
        self.nodes: dict[str, str] = {}
        self.killed: dict[str, int] = {}

    def run(self, hook: Callable[[str, str, dict[str, Any]], None] | None = None) -> MatrixResult:
        config, recipes = load_matrix(self.recipe)
        return run_matrix(config, recipes=recipes, hook=hook, log=lambda line: None)


def _kill_first_build(run: ClusterRun) -> Callable[[str, str, dict[str, Any]], None]:
    pids: dict[str, int] = {}

    def hook(label: str, event: str, info: dict[str, Any]) -> None:
        if event == "running":
            pids[label] = info["pid"]
        elif event == "stage" and info["stage"].startswith("build/") and not run.killed:
            run.killed[label] = pids[label]
            os.kill(pids[label], signal.SIGKILL)

    return hook


@pytest.fixture(scope="module")
def cluster_run(module_tmp: Callable[[str], Path]) -> Any:
    run = ClusterRun(module_tmp("matrix"))
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"target:rtx-ampere": 1}}
    )
    ada = cluster.add_node(num_cpus=1, resources={"target:rtx-ada": 1})
    run.nodes = {"rtx-ampere": cluster.head_node.node_id, "rtx-ada": ada.node_id}
    ray.init(address=cluster.address, log_to_driver=False, include_dashboard=False)
    try:
        cluster.wait_for_nodes()
        run.first = run.run(hook=_kill_first_build(run))
        yield run
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_every_cell_completes_on_a_node_of_its_target(cluster_run: ClusterRun) -> None:
    result = cluster_run.first
    assert [c["status"] for c in result.cells] == ["done"] * 6, result.failed
    for cell in result.cells:
        assert cell["node"] == cluster_run.nodes[cell["target"]], cell["target"]
        assert cell["passed"] is True and cell["cached"] is False
        assert cell["engine"]["plan_bytes"] > 0
    # Each target's engine was built for its own GPU architecture (the engine manifest in the store).
    store = cluster_run.root / "work" / "store"
    expected = {"rtx-ampere": ["8.6"], "rtx-ada": ["8.9"]}
    for cell in result.cells:
        [manifest] = store.glob(f"objects/cell/{cell['key'].removeprefix('sha256:')}/*/engines/*/manifest.json")
        built = json.loads(manifest.read_text())["extra"]["engines"]["rtx"]["gpu_target"]["compute_capabilities"]
        assert built == expected[cell["target"]], cell["target"]


def test_the_worker_killed_mid_build_was_retried_and_its_cell_completed(cluster_run: ClusterRun) -> None:
    assert len(cluster_run.killed) == 1
    (label, pid), = cluster_run.killed.items()
    starts = [info for name, event, info in cluster_run.first.events if name == label and event == "running"]
    assert len(starts) == 2 and starts[0]["pid"] == pid and starts[1]["pid"] != pid
    cell = next(c for c in cluster_run.first.cells if f"{c['model']}/{c['candidate']}@{c['target']}" == label)
    assert cell["status"] == "done" and cell["pid"] == starts[1]["pid"]


def test_the_report_links_every_cell_report(cluster_run: ClusterRun) -> None:
    work = cluster_run.root / "work"
    payload = json.loads((work / "matrix.json").read_text())
    page = (work / "matrix.html").read_text()
    assert payload["counts"] == {"passed": 6, "gate failed": 0, "failed": 0}
    for cell in payload["cells"]:
        assert (work / cell["report"]).is_file()
        assert f'href="{cell["report"]}"' in page


def test_a_rerun_is_fully_cached(cluster_run: ClusterRun) -> None:
    result = cluster_run.run()
    assert all(c["status"] == "done" and c["cached"] for c in result.cells)
    assert not [e for e in result.events if e[1] == "running"]  # no task ran


def test_a_corrupt_artifact_in_the_store_is_refused_then_rebuilt(cluster_run: ClusterRun) -> None:
    store = cluster_run.root / "work" / "store"
    victim = cluster_run.first.cells[2]
    [plan] = store.glob(f"objects/cell/{victim['key'].removeprefix('sha256:')}/*/engines/*/rtx.plan")
    plan.write_bytes(plan.read_bytes()[:1000])  # a truncated engine
    notes: list[str] = []
    config, recipes = load_matrix(cluster_run.recipe)
    result = run_matrix(config, recipes=recipes, log=notes.append)
    assert any("store entry refused" in n and "rtx.plan" in n for n in notes), notes
    by_key = {c["key"]: c for c in result.cells}
    rebuilt = by_key[victim["key"]]
    assert rebuilt["status"] == "done" and rebuilt["cached"] is False
    assert rebuilt["node"] == cluster_run.nodes[victim["target"]]
    assert sum(not c["cached"] for c in result.cells) == 1


def test_a_cell_that_keeps_failing_is_marked_failed_and_the_rest_finishes(cluster_run: ClusterRun) -> None:
    # Volta (7.0) is no TensorRT-RTX target: that target's builds fail in the cell, the other cells are cached.
    targets = [
        '{name: rtx-ampere, backend: tensorrt_rtx, compute_capabilities: ["8.6"], placement: {resource: "target:rtx-ampere"}}',
        '{name: rtx-ada, backend: tensorrt_rtx, compute_capabilities: ["8.9"], placement: {resource: "target:rtx-ada"}}',
        '{name: rtx-volta, backend: tensorrt_rtx, compute_capabilities: ["7.0"], placement: {resource: "target:rtx-ada"}}',
    ]
    config, recipes = load_matrix(cluster_run.recipe, [f"targets=[{', '.join(targets)}]"])
    result = run_matrix(config, recipes=recipes, log=lambda line: None)
    failed = {f"{c['candidate']}@{c['target']}": c["error"] for c in result.failed}
    assert sorted(failed) == [f"{name}@rtx-volta" for name in ("naive-per-token", "sq-per-tensor", "sq-per-token")]
    assert all("BuildError" in e and "'7.0'" in e for e in failed.values()), failed
    assert all(c["status"] == "done" and c["cached"] for c in result.cells if c["target"] != "rtx-volta")
    # A task that raises is not retried (it would fail the same way): one start per failed cell.
    starts = [label for label, event, _ in result.events if event == "running" and "@rtx-volta" in label]
    assert len(starts) == 3
    payload = json.loads(result.report.with_name("matrix.json").read_text())
    assert payload["counts"]["failed"] == 3
    assert "compute capability" in result.report.read_text()


def test_ctrl_c_cancels_the_running_cells_and_publishes_nothing(cluster_run: ClusterRun) -> None:
    import time

    from sq_trt.matrix.plan import plan_matrix
    from sq_trt.matrix.store import ArtifactStore

    # Another gate for sq-per-token: new keys for its two cells (their report reads it); the rest is cached.
    config, recipes = load_matrix(cluster_run.recipe, ["gate=['sq-per-token:ppl_increase_pct<=99']"])
    before = {c.key for c in plan_matrix(*load_matrix(cluster_run.recipe)).cells}
    new = [c for c in plan_matrix(config, recipes).cells if c.key not in before]
    assert sorted(c.label for c in new) == ["tiny-llama/sq-per-token@rtx-ada", "tiny-llama/sq-per-token@rtx-ampere"]
    pids: dict[str, int] = {}

    def interrupt(label: str, event: str, info: dict[str, Any]) -> None:
        if event == "running":
            pids[label] = info["pid"]
        if event == "stage":  # a cell is building: what Ctrl-C in the terminal raises on the driver
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_matrix(config, recipes=recipes, hook=interrupt, log=lambda line: None)
    assert pids
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids.values()):
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in pids.values()), "a cancelled cell's worker is still running"
    time.sleep(2)
    store = ArtifactStore(config.resolved_store)
    assert all(store.entry("cell", cell.key) is None for cell in new)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_target_no_node_offers_is_refused_before_anything_runs(cluster_run: ClusterRun) -> None:
    from sq_trt.errors import ConfigError

    config, recipes = load_matrix(
        cluster_run.recipe,
        ["gate=['sq-per-token:ppl_increase_pct<=98']", "targets.1.placement={resource: 'target:rtx-blackwell'}"],
    )
    events: list[tuple[str, str]] = []
    with pytest.raises(ConfigError, match="target 'rtx-ada': no node of the Ray cluster offers resource 'target:rtx-blackwell'"):
        run_matrix(config, recipes=recipes, hook=lambda label, event, info: events.append((label, event)), log=lambda line: None)
    assert events == []
