"""The Markdown summary: verdict first, metrics table, worst layers, plots as files, provenance."""

from __future__ import annotations

import json

from sq_trt.report.content import Report, format_value


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Report) -> str:
    """The summary as Markdown (plots referenced as ``plots/<file>.png``)."""
    passed = bool(report.verdict.get("passed"))
    lines = [f"# {report.title}", "", f"**Accuracy gate: {'PASSED' if passed else 'FAILED'}**", ""]
    if report.gate_conditions:
        lines += [f"Gate: `{'`, `'.join(report.gate_conditions)}`", ""]
    for r in report.verdict.get("results", []):
        lines.append(f"- {'PASS' if r['passed'] else 'FAIL'} {r['candidate']}: {r['reason']}")
    base = report.baseline
    lines += [
        "",
        "## Metrics per candidate",
        "",
        f"Baseline: `{base.get('name')}` ({base.get('kind')}: `{base.get('target')}`)",
        "",
    ]
    header = ["candidate", *[title for _, title, _ in report.columns]]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * len(report.columns)) + "|")
    for cand in report.candidates:
        cells = [format_value(key, cand["summary"].get(key)) for key, _, _ in report.columns]
        lines.append("| " + " | ".join([_cell(cand["name"]), *cells]) + " |")
    lines += ["", "## Per-layer error ranking", ""]
    if report.layers:
        lines += [
            f"{report.layers.get('method')}; KL with all layers quantized: {report.layers.get('kl_all_layers', 0):.4g}.",
            "",
            "| # | layer | KL leave-one-in | output err / signal | suggestion |",
            "|---:|---|---:|---:|---|",
        ]
        for i, r in enumerate(report.layers["layers"]):
            lines.append(
                f"| {i + 1} | `{r['name']}` | {r['kl_leave_one_in']:.3g} | {r['output_error_ratio']:.3g} | "
                f"{_cell(r['suggestion'])} |"
            )
    else:
        lines.append("No per-layer ranking in these results.")
    lines += ["", "## Plots", ""]
    lines += [f"![{p.caption}](plots/{p.filename})" for p in report.plots] or ["No plots."]
    lines += [
        "",
        "## Provenance",
        "",
        "```json",
        json.dumps(report.provenance_items(), indent=2, default=str),
        "```",
        "",
    ]
    return "\n".join(lines)
