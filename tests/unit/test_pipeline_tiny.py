"""`sq-trt pipeline` end to end on a tiny random Llama: every stage, reuse, --from, interrupts, the gate's exit code.

One work directory is shared by the tests of this module (the first run costs
most of the time); each later test changes one thing and checks exactly which
stages rerun. The engines are built with TensorRT-RTX when it is installed (the
`rtx` extra; the plugin candidate is then skipped with its reason), else the
build stage is skipped and says why.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sq_trt.artifacts import load_manifest
from sq_trt.cli import main
from sq_trt.pipeline.recipe import load_recipe
from sq_trt.pipeline.stages import run_pipeline

RECIPE = Path(__file__).resolve().parents[2] / "builders" / "smollm2-135m.yaml"
TINY = [
    "model.source=tiny:llama",
    "calibrate.samples=2",
    "calibrate.seq_len=32",
    "compare.samples=2",
    "compare.seq_len=32",
    "build.profiles.0.seq=[1,32,64]",
    "export.candidates=[{name: naive-per-token, smooth: false}, {name: sq-per-token-plugin, encoding: plugin}]",
    "gate=['sq-per-token-plugin:ppl_increase_pct<=100']",
]


def _rtx_available() -> bool:
    try:
        import tensorrt_rtx_libs  # noqa: F401
    except ImportError:
        return False
    return True


class TinyRun:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.overrides = [*TINY, f"work_dir={root / 'work'}", f"engines_dir={root / 'engines'}"]

    def recipe(self, *extra: str) -> Any:
        return load_recipe(RECIPE, [*self.overrides, *extra])

    def run(self, *extra: str, **kwargs: Any) -> dict[str, str]:
        result = run_pipeline(self.recipe(*extra), progress=False, log=lambda _: None, **kwargs)
        self.last = result
        return {r.name: r.status for r in result.reports}


@pytest.fixture(scope="module")
def tiny(module_tmp: Callable[[str], Path]) -> TinyRun:
    run = TinyRun(module_tmp("pipeline"))
    run.first = run.run()
    run.first_result = run.last
    return run


def test_first_run_runs_every_stage_and_writes_every_artifact(tiny: TinyRun) -> None:
    work = tiny.root / "work"
    expected_ran = [
        "calibrate",
        "smooth",
        "export/naive-per-token",
        "export/sq-per-token-plugin",
        "compare",
        "report",
    ]
    assert all(tiny.first[name] == "ran" for name in expected_ran), tiny.first
    for sub in (
        "calibrate",
        "smooth",
        "export/naive-per-token",
        "export/sq-per-token-plugin",
        "compare",
        "report",
    ):
        assert (work / sub / "manifest.json").is_file(), sub
    assert (work / "export" / "naive-per-token" / "model.int8.onnx").is_file()
    assert (work / "report" / "report.html").is_file() and (work / "report" / "report.md").is_file()
    summary = json.loads((work / "pipeline_summary.json").read_text())
    assert summary["gate"]["passed"] is True
    assert [s["name"] for s in summary["stages"]][:2] == ["calibrate", "smooth"]
    comparison = json.loads((work / "compare" / "comparison.json").read_text())
    # The plugin encoding runs on CPU through ONNX Runtime (plugin node rewritten to standard ops).
    assert sorted(comparison["metrics"]) == ["naive-per-token", "sq-per-token-plugin"]
    assert comparison["baseline"]["target"].endswith("export/naive-per-token/model.fp16.onnx")


@pytest.mark.skipif(not _rtx_available(), reason="TensorRT-RTX (the `rtx` extra) is not installed")
def test_one_trace_per_architecture_and_graph_kind_per_run(tiny: TinyRun) -> None:
    # Both candidates' graphs and the FP16 baseline come from one float16 trace of the architecture:
    # the naive candidate traces the original model, the smoothed one gets its weights swapped in.
    assert tiny.first_result.float_graphs == {"traces": 1, "reused": 1, "refused": []}
    summary = json.loads((tiny.root / "work" / "pipeline_summary.json").read_text())
    assert set(summary["float_graphs"]) == {"traces", "reused", "refused"}  # recorded in every run's summary


def test_engines_are_built_with_tensorrt_rtx_and_the_plugin_graph_is_skipped(tiny: TinyRun) -> None:
    assert tiny.first["build/fp16"] == "ran"
    assert tiny.first["build/naive-per-token"] == "ran"
    assert tiny.first["build/sq-per-token-plugin"] == "skipped"
    plugin_report = next(r for r in tiny.last.reports if r.name == "build/sq-per-token-plugin")
    assert "cannot build graphs with the per-token plugin" in plugin_report.detail
    manifest = json.loads((tiny.root / "engines" / "naive-per-token" / "manifest.json").read_text())
    assert manifest["extra"]["engines"]["rtx"]["backend"] == "tensorrt_rtx"
    assert (tiny.root / "engines" / "fp16" / "rtx.plan").stat().st_size > 0


@pytest.mark.skipif(not _rtx_available(), reason="TensorRT-RTX (the `rtx` extra) is not installed")
def test_the_cli_and_the_pipeline_write_the_same_provenance(tiny: TinyRun) -> None:
    """`sq-trt export` + `sq-trt build` from the pipeline's calibration record what the pipeline's own did."""
    work, root = tiny.root / "work", tiny.root
    cli_export, cli_engines = root / "cli-export", root / "cli-engines"
    assert main(["export", "--model", "tiny:llama", "--act-scales", str(work / "calibrate"), "--out", str(cli_export)]) == 0
    build = ["build", "--onnx", str(cli_export / "model.int8.onnx"), "--name", "cli", "--target", "rtx"]
    build += ["--engines-dir", str(cli_engines), "--backend", "tensorrt_rtx", "--batch", "1,1,4", "--seq", "1,32,64"]
    assert main(build) == 0
    pipeline_export = json.loads((work / "export" / "naive-per-token" / "manifest.json").read_text())
    cli_manifest = json.loads((cli_export / "manifest.json").read_text())
    calibrate = load_manifest(work / "calibrate")
    # One meaning per key: the weights, the content of the scales used, the calibrate artifact they came from.
    assert cli_manifest["inputs"] == pipeline_export["inputs"]
    assert set(cli_manifest["inputs"]) == {"model", "act_scales", "calibrate"}
    assert cli_manifest["inputs"]["calibrate"] == calibrate.fingerprint
    assert cli_manifest["inputs"]["act_scales"] == cli_manifest["extra"]["act_scales_hash"]
    pipeline_engine = json.loads((root / "engines" / "naive-per-token" / "manifest.json").read_text())
    cli_engine = json.loads((cli_engines / "cli" / "manifest.json").read_text())
    pipeline_record, cli_record = pipeline_engine["extra"]["engines"]["rtx"], cli_engine["extra"]["engines"]["rtx"]
    assert set(cli_record) == set(pipeline_record) and set(cli_engine["inputs"]) == set(pipeline_engine["inputs"])
    assert cli_record["calibration_hash"] == pipeline_record["calibration_hash"] == calibrate_hash(cli_manifest)


def calibrate_hash(export_manifest: dict[str, Any]) -> str:
    value = export_manifest["inputs"]["act_scales"]
    assert isinstance(value, str) and value.startswith("sha256:")
    return value


def test_rerun_with_nothing_changed_reuses_everything(tiny: TinyRun) -> None:
    statuses = tiny.run()
    assert {s for name, s in statuses.items() if not name.startswith("build/")} == {"reused"}
    assert all(s in ("reused", "skipped") for s in statuses.values())
    assert tiny.last.gate_passed is True


HEAVY = ("torch", "transformers", "onnx", "onnxruntime")
# The child runs `sq-trt` as the console script does and reports the exit code and which heavy libraries it imported.
_CHILD = """
import json, sys
from sq_trt.cli import main
try:
    code = main(sys.argv[2:])
except SystemExit as exc:  # --help
    code = exc.code
heavy = sorted(name for name in json.loads(sys.argv[1]) if name in sys.modules)
print(json.dumps({"code": code, "imported": heavy}), file=sys.stderr)
"""


def _cli_in_child(*argv: str) -> tuple[int, str, str, list[str]]:
    """``sq-trt argv`` in a fresh interpreter: exit code, stdout, stderr (without the report), heavy imports."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(HEAVY), *argv], capture_output=True, text=True, check=False
    )
    *stderr, last = done.stderr.rstrip("\n").split("\n")
    result = json.loads(last)
    return result["code"], done.stdout, "\n".join(stderr), result["imported"]


def _pipeline_argv(tiny: TinyRun, *extra: str) -> list[str]:
    argv = ["pipeline", "--recipe", str(RECIPE), "--quiet"]
    for override in [*tiny.overrides, *extra]:
        argv += ["--set", override]
    return argv


def test_a_cached_run_and_help_import_no_heavy_library(tiny: TinyRun) -> None:
    code, out, _, imported = _cli_in_child(*_pipeline_argv(tiny))
    assert code == 0, out
    summary = json.loads((tiny.root / "work" / "pipeline_summary.json").read_text())
    assert {s["status"] for s in summary["stages"] if not s["name"].startswith("build/")} == {"reused"}
    assert "PASS" in out
    assert imported == []  # preflight read the tiny family's table; no stage ran, so no model, graph or session
    code, out, _, imported = _cli_in_child("--help")
    assert code == 0 and "pipeline" in out
    assert imported == []


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("compare.seq_len=4096", "max_position_embeddings"),  # past the tiny model's 512 positions
        ("model.device=bogus", "not a torch device"),
        ("data.source=/no/such/corpus.txt", "is not a file"),
    ],
)
def test_a_cached_run_still_refuses_an_invalid_recipe_before_any_stage(
    tiny: TinyRun, override: str, fragment: str
) -> None:
    records = tiny.root / "work" / ".pipeline"
    before = {p.name: p.stat().st_mtime_ns for p in records.iterdir()}
    summary = (tiny.root / "work" / "pipeline_summary.json").read_bytes()
    code, out, err, imported = _cli_in_child(*_pipeline_argv(tiny, override))
    assert code == 1, (out, err)
    assert err.startswith("sq-trt pipeline: error: ") and err.count("\n") == 0 and fragment in err, err
    assert imported == []  # refused by the cheap checks, before any stage could need torch
    assert {p.name: p.stat().st_mtime_ns for p in records.iterdir()} == before
    assert (tiny.root / "work" / "pipeline_summary.json").read_bytes() == summary


def test_changing_the_gate_reruns_only_the_report_and_sets_exit_code_3(
    tiny: TinyRun, capsys: pytest.CaptureFixture[str]
) -> None:
    failing = "gate=['sq-per-token-plugin:ppl_increase_pct<=-100']"
    argv = ["pipeline", "--recipe", str(RECIPE), "--quiet"]
    for override in [*tiny.overrides, failing]:
        argv += ["--set", override]
    assert main(argv) == 3
    captured = capsys.readouterr()
    assert "accuracy gate failed" in captured.err
    assert "report:" in captured.out and "gate (" in captured.out and "FAIL" in captured.out
    summary = json.loads((tiny.root / "work" / "pipeline_summary.json").read_text())
    statuses = {s["name"]: s["status"] for s in summary["stages"]}
    assert statuses["report"] == "ran"
    assert {s for name, s in statuses.items() if name != "report" and not name.startswith("build/")} == {
        "reused"
    }
    report = json.loads((tiny.root / "work" / "report" / "report.json").read_text())
    assert json.dumps(report).count("ppl_increase_pct<=-100") >= 1
    # Back to the recipe's gate: the report reruns again and passes.
    assert tiny.run()["report"] == "ran" and tiny.last.gate_passed is True


def test_changing_alpha_reruns_from_smooth_and_an_interrupt_is_not_trusted(tiny: TinyRun) -> None:
    def interrupt(event: str, name: str) -> None:
        if (event, name) == ("written", "smooth"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tiny.run("smooth.alpha=0.6", hook=interrupt)
    assert not list((tiny.root / "work").glob(".*partial"))
    statuses = tiny.run("smooth.alpha=0.6")
    assert statuses["calibrate"] == "reused"
    assert statuses["export/naive-per-token"] == "reused"  # unsmoothed: does not read smooth
    for name in ("smooth", "export/sq-per-token-plugin", "compare", "report"):
        assert statuses[name] == "ran", (name, statuses)
    manifest = json.loads((tiny.root / "work" / "smooth" / "manifest.json").read_text())
    assert set(manifest["extra"]["alphas"].values()) == {0.6}
    assert tiny.run("smooth.alpha=0.6")["smooth"] == "reused"


def test_from_forces_that_stage_and_later(tiny: TinyRun) -> None:
    statuses = tiny.run("smooth.alpha=0.6", from_kind="compare")
    assert statuses["compare"] == "ran" and statuses["report"] == "ran"
    assert statuses["calibrate"] == statuses["smooth"] == "reused"
