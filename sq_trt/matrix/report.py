"""The matrix report: ``matrix.html`` (models x candidates in rows, targets in columns) and ``matrix.json``.

Self-contained HTML (no scripts, no network): each cell shows the gate verdict, the key metrics,
the engine's size and build time, the comparison's inference time, the node that ran it, and a
link to the cell's own report (copied next to the page).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from sq_trt.matrix.pipeline_adapter import atomic_write_text

MATRIX_JSON = "matrix.json"
MATRIX_HTML = "matrix.html"
_METRICS = (("ppl_increase_pct", "ppl +%", "{:+.2f}"), ("top1_agreement", "top-1", "{:.3f}"), ("cosine", "cosine", "{:.5f}"))

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse}th,td{border:1px solid #bbb;padding:.45em .6em;vertical-align:top}
th{background:#f0f0f0;text-align:left}td.pass{background:#e6f4e6}td.fail{background:#fbe3e3}
td.error{background:#fff1d6}td.none{background:#f7f7f7;color:#888}.v{font-weight:700}
small,.m{color:#555;font-size:.85em}.m div{white-space:nowrap}
"""


def _cell_html(result: dict[str, Any] | None, link: str | None) -> str:
    if result is None:
        return '<td class="none">not run</td>'
    if result["status"] == "failed":
        return f'<td class="error"><div class="v">failed</div><small>{html.escape(result.get("error", ""))}</small></td>'
    passed = result.get("passed")
    lines = [f'<div class="v">{"PASS" if passed else "FAIL"}</div>']
    metrics = result.get("metrics") or {}
    for key, name, fmt in _METRICS:
        if metrics.get(key) is not None:
            lines.append(f"<div>{name} {fmt.format(metrics[key])}</div>")
    engine = result.get("engine") or {}
    if engine.get("plan_bytes"):
        lines.append(f"<div>engine {engine['plan_bytes'] / 2**20:.2f} MiB, built in {engine['build_seconds']:.1f} s</div>")
    else:
        skipped = next((s["detail"] for s in result.get("stages", []) if s["name"].startswith("build/") and s["status"] == "skipped"), "")
        lines.append(f"<div>no engine{': ' + html.escape(skipped) if skipped else ''}</div>")
    if result.get("inference_s") is not None:
        lines.append(f"<div>inference {result['inference_s'] * 1e3:.1f} ms ({html.escape(str(result.get('compared')))})</div>")
    lines.append(f"<div>node {html.escape(str(result.get('node', ''))[:8])}{' (cached)' if result.get('cached') else ''}</div>")
    if link is not None:
        lines.append(f'<div><a href="{html.escape(link)}">cell report</a></div>')
    if not passed and result.get("gate_detail"):
        lines.append(f"<small>{html.escape(result['gate_detail'])}</small>")
    css = "pass" if passed else "fail"
    return f'<td class="{css}"><div class="m">{"".join(lines)}</div></td>'


def render_html(payload: dict[str, Any]) -> str:
    """The page for a ``matrix.json`` payload."""
    targets = [t["name"] for t in payload["targets"]]
    by_cell = {(r["model"], r["candidate"], r["target"]): r for r in payload["cells"]}
    rows = []
    for model, candidate in dict.fromkeys((r["model"], r["candidate"]) for r in payload["cells"]):
        cells = "".join(
            _cell_html(by_cell.get((model, candidate, t)), by_cell.get((model, candidate, t), {}).get("report"))
            for t in targets
        )
        rows.append(f"<tr><th>{html.escape(model)}<br><small>{html.escape(candidate)}</small></th>{cells}</tr>")
    head = "".join(
        f"<th>{html.escape(t['name'])}<br><small>{html.escape(t['backend'])} {html.escape(t['where'])}</small></th>"
        for t in payload["targets"]
    )
    counts = payload["counts"]
    summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>sq-trt matrix {html.escape(payload['name'])}</title><style>{_STYLE}</style></head><body>"
        f"<h1>Matrix {html.escape(payload['name'])}</h1><p>{html.escape(payload.get('description', ''))}</p>"
        f"<p>{len(payload['cells'])} cells: {html.escape(summary)}; wall time {payload['wall_s']:.1f} s; "
        f"store <code>{html.escape(payload['store'])}</code></p>"
        f"<table><tr><th>model / candidate</th>{head}</tr>{''.join(rows)}</table>"
        "<p><small>Metrics are the candidate's against the FP16 baseline on held-out text. Inference is the "
        "comparison's runner: ONNX Runtime on the CPU for TensorRT-RTX targets (onnx), the engine itself on "
        "TensorRT proper targets (plan).</small></p></body></html>\n"
    )


def write_matrix_report(out: Path, payload: dict[str, Any]) -> Path:
    """Write ``matrix.json`` and ``matrix.html`` into ``out`` (atomically); returns the HTML's path."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / MATRIX_JSON, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    return atomic_write_text(out / MATRIX_HTML, render_html(payload))
