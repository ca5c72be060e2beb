"""``bench/bench_pipeline.py goals`` bookkeeping: suite logs, merging an earlier run, the goals table."""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path
from types import ModuleType

import pytest
from script_module import load_script


def _bench() -> ModuleType:
    return load_script("bench/bench_pipeline.py")


def _repo(path: Path) -> str:
    path.mkdir()
    for command in (
        ["init", "-q"],
        ["-c", "user.email=a@b", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "x"],
    ):
        subprocess.run(["git", "-C", str(path), *command], check=True)
    return subprocess.run(
        ["git", "-C", str(path), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()


def _args(tmp_path: Path, **kw: object) -> argparse.Namespace:
    base = {
        "before": str(tmp_path / "before"), "after": str(tmp_path / "after"), "parts": "none",
        "work": str(tmp_path / "work"), "repeats": 1, "modelopt_python": "", "previous": None,
        "suite_log_before": None, "suite_log_after": None,
    }  # fmt: skip
    return argparse.Namespace(**{**base, **kw})


def test_suite_log_gives_pytests_total_and_the_tested_commit(tmp_path: Path) -> None:
    log = tmp_path / "ci.log"
    log.write_text(
        "sq-trt tests: commit abc123\n....\n1285 passed, 50 skipped, 98 warnings in 924.15s (0:15:24)\n"
    )
    suite_run = _bench()._suite_run
    run = suite_run(log)
    assert (run["suite_s"], run["suite_commit"]) == (924.15, "abc123")
    old = tmp_path / "old.log"
    old.write_text("1220 passed, 50 skipped in 951.06s (0:15:51)\n")  # before test.sh printed the commit
    run = suite_run(old)
    assert (run["suite_s"], run["suite_commit"]) == (951.06, None)


def test_previous_results_are_kept_and_another_commit_is_refused(tmp_path: Path) -> None:
    bench = _bench()
    commits = {"before": _repo(tmp_path / "before"), "after": _repo(tmp_path / "after")}
    previous = tmp_path / "previous.json"
    results = {
        label: {"commit": commit, "demo": {"wall_s": wall, "traces": traces}}
        for (label, commit), wall, traces in zip(commits.items(), (353.4, 278.4), (2, 1), strict=True)
    }
    previous.write_text(json.dumps({"command": "first", "results": results}))
    log = tmp_path / "ci.log"
    log.write_text("sq-trt tests: commit deadbeef\n1 passed in 700.0s (0:11:40)\n")
    merged = bench.bench_goals(_args(tmp_path, previous=str(previous), suite_log_after=str(log)))
    assert merged["commands"][0] == "first" and len(merged["commands"]) == 2
    assert merged["figures"]["after"]["demo_wall_s"] == 278.4  # kept from the earlier run
    assert merged["figures"]["after"]["suite_s"] == 700.0  # measured now
    rows = {line.split(" | ")[0]: line for line in merged["table"].splitlines()}
    assert rows["| float traces per demo run"].endswith("| 2 | 1 | yes |")
    assert rows["| demo end to end, idle, s"].endswith("| no |")
    assert rows["| test suite (pytest, CI machine), s"].endswith("| - | 700 | no |")

    results["after"]["commit"] = "0" * 40
    previous.write_text(json.dumps({"command": "first", "results": results}))
    with pytest.raises(SystemExit, match="another after commit"):
        bench.bench_goals(_args(tmp_path, previous=str(previous)))
