"""The matrix report's page and the live table, from results as the tasks return them (no Ray)."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from sq_trt.matrix.live import LiveTable
from sq_trt.matrix.report import write_matrix_report


def _cell(candidate: str, target: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": "tiny",
        "candidate": candidate,
        "target": target,
        "status": "done",
        "passed": True,
        "metrics": {"ppl_increase_pct": 0.5, "top1_agreement": 0.98, "cosine": 0.9999},
        "engine": {"plan_bytes": 3 * 2**20, "build_seconds": 2.5},
        "inference_s": 0.012,
        "compared": "onnx",
        "node": "abcdef0123456789",
        "report": f"cells/tiny/{candidate}/{target}/work/report/report.html",
        **extra,
    }


def _payload() -> dict[str, Any]:
    return {
        "schema": 1,
        "name": "m<1>",
        "description": "",
        "store": "/s",
        "wall_s": 1.0,
        "counts": {"passed": 2, "gate failed": 1, "failed": 1},
        "targets": [{"name": "ampere", "backend": "tensorrt_rtx", "where": "r"}, {"name": "ada", "backend": "tensorrt_rtx", "where": "r"}],
        "cells": [
            _cell("naive", "ampere"),
            _cell("naive", "ada", cached=True),
            _cell("sq", "ampere", passed=False, gate_detail="sq: ppl_increase_pct 7.1 > 2"),
            {"model": "tiny", "candidate": "sq", "target": "ada", "status": "failed", "error": "BuildError: <sm 7.0>"},
        ],
    }


class _Cells(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.classes: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "td":
            self.classes.append(values.get("class") or "")
        if tag == "a":
            self.links.append(values.get("href") or "")


def test_the_page_has_a_row_per_model_and_candidate_and_a_column_per_target(tmp_path: Path) -> None:
    page = write_matrix_report(tmp_path, _payload())
    parser = _Cells()
    text = page.read_text()
    parser.feed(text)
    assert parser.classes == ["pass", "pass", "fail", "error"]  # row-major: naive (ampere, ada), sq (ampere, ada)
    assert parser.links == [c["report"] for c in _payload()["cells"][:3]]
    assert "BuildError: &lt;sm 7.0&gt;" in text and "m&lt;1&gt;" in text  # escaped
    assert "sq: ppl_increase_pct 7.1 &gt; 2" in text
    assert "engine 3.00 MiB, built in 2.5 s" in text and "inference 12.0 ms (onnx)" in text
    assert json.loads((tmp_path / "matrix.json").read_text())["cells"][3]["error"] == "BuildError: <sm 7.0>"


def test_the_live_table_prints_each_change_with_node_attempt_and_stage() -> None:
    lines: list[str] = []
    table = LiveTable(["m/c@t"], log=lines.append, tty=False)
    table.update("m/c@t", "queued", {})
    table.update("m/c@t", "running", {"node": "node-one-0123", "pid": 1})
    table.update("m/c@t", "stage", {"stage": "build/c"})
    table.update("m/c@t", "running", {"node": "node-two-4567", "pid": 2})  # Ray's retry
    table.update("m/c@t", "done", {"node": "node-two-4567"})
    assert lines[1].split() == ["[matrix]", "m/c@t", "running", "on", "node-one"]
    assert lines[2].endswith("on node-one build/c")
    assert "running on node-two (attempt 2)" in lines[3]
    assert lines[4].split()[2:5] == ["done", "on", "node-two"]
