"""The Markdown summary: verdict first, metrics table, worst layers, plots as files, provenance."""

from __future__ import annotations

import json

from sq_trt.report.content import Report, format_value


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def plan_lines(report: Report) -> list[str]:
    """The activation-plan section: per candidate, static vs per-token counts and FLOP shares, the per-token linears."""
    if not report.plans:
        return []
    lines = ["", "## Activation plan: static INT8 vs per token", ""]
    lines += ["| candidate | linears | static per tensor | per token | per-token share of linear FLOPs |"]
    lines += ["|---|---:|---:|---:|---:|"]
    for name, plan in report.plans.items():
        lines.append(
            f"| {_cell(name)} | {plan['linears']} | {plan['per_tensor']} | {plan['per_token']} | "
            f"{plan['per_token_flops_share']:.1%} |"
        )
    for name, plan in report.plans.items():
        if not plan["per_token"] or not plan["per_tensor"]:
            continue
        lines += ["", f"Per-token linears of `{name}` (errors: output MSE over output power, on calibration tokens):", ""]
        lines += ["| linear | static error | per-token error | ratio | why |", "|---|---:|---:|---:|---|"]
        for row in plan["per_token_rows"]:
            cells = [format_value("", row[k]) if row[k] is not None else "n/a" for k in ("static_error", "per_token_error")]
            ratio = f"{row['ratio']:.3g}x" if row["ratio"] is not None else "n/a"
            lines.append(f"| `{row['name']}` | {cells[0]} | {cells[1]} | {ratio} | {_cell(row['reason'])} |")
    return lines


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
    lines += plan_lines(report)
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
