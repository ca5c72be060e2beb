"""One self-contained HTML page: inline CSS, plots as base64 PNG data URIs, no external assets."""

from __future__ import annotations

import base64
import json
from html import escape
from pathlib import Path
from typing import Any

from sq_trt.report.content import Report, format_value

_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; margin: 0;
       background: #f4f6f8; color: #1c2833; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 48px; }
h1 { font-size: 1.5em; margin: 0 0 4px; }
h2 { font-size: 1.15em; margin: 32px 0 10px; border-bottom: 1px solid #d5d8dc; padding-bottom: 4px; }
.sub { color: #566573; margin: 0 0 18px; }
.verdict { border-radius: 8px; padding: 16px 20px; color: #fff; }
.verdict.pass { background: #1e8449; } .verdict.fail { background: #b03a2e; }
.verdict .big { font-size: 1.6em; font-weight: 700; letter-spacing: .02em; }
.verdict ul { margin: 8px 0 0; padding-left: 20px; }
table { border-collapse: collapse; background: #fff; font-size: .88em; width: 100%; }
th, td { border: 1px solid #d5d8dc; padding: 5px 8px; text-align: right; white-space: nowrap; }
th { background: #eaecee; } td.l, th.l { text-align: left; }
td.pass { color: #1e8449; font-weight: 600; } td.fail { color: #b03a2e; font-weight: 600; }
td.wrap { white-space: normal; text-align: left; }
th.pass { color: #1e8449; } th.fail { color: #b03a2e; }
.runner { font-weight: 400; font-size: .85em; color: #566573; }
table.metrics { width: auto; min-width: 50%; }
.scroll { overflow-x: auto; }
figure { background: #fff; border: 1px solid #d5d8dc; border-radius: 6px; margin: 14px 0; padding: 10px; }
figure img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
figcaption { color: #566573; font-size: .88em; margin-top: 6px; }
code { background: #eaecee; padding: 1px 4px; border-radius: 3px; }
pre { background: #fff; border: 1px solid #d5d8dc; padding: 10px; overflow-x: auto; font-size: .82em; }
"""


def _verdict(report: Report) -> str:
    passed = bool(report.verdict.get("passed"))
    items = "".join(
        f"<li>{'PASS' if r['passed'] else 'FAIL'} &middot; {escape(r['candidate'])}: {escape(r['reason'])}</li>"
        for r in report.verdict.get("results", [])
    )
    word = "PASSED" if passed else "FAILED"
    conditions = ", ".join(escape(c) for c in report.gate_conditions) or "no conditions"
    return (
        f'<section class="verdict {"pass" if passed else "fail"}" id="verdict">'
        f'<div class="big">Accuracy gate {word}</div><div>gate: {conditions}</div><ul>{items}</ul></section>'
    )


def _metrics_table(report: Report) -> str:
    # Metrics as rows, candidates as columns: a handful of candidates fit the page, eleven metrics would not.
    failed = {r["candidate"] for r in report.verdict.get("results", []) if not r["passed"]}
    head = "".join(
        f'<th class="{"fail" if c["name"] in failed else "pass"}">{escape(c["name"])}<br>'
        f'<span class="runner">{escape(c.get("kind", ""))}: {escape(Path(c.get("target", "")).name)}</span></th>'
        for c in report.candidates
    )
    rows = "".join(
        f'<tr><td class="l">{escape(title)}</td>'
        + "".join(f"<td>{escape(format_value(key, c['summary'].get(key)))}</td>" for c in report.candidates)
        + "</tr>"
        for key, title, _ in report.columns
    )
    base = report.baseline
    return (
        f"<p>Baseline <b>{escape(base.get('name', ''))}</b> ({escape(base.get('kind', ''))}: "
        f"<code>{escape(base.get('target', ''))}</code>); baseline perplexity "
        f"{escape(format_value('ppl', _baseline_ppl(report)))}. Full runner paths are under Provenance.</p>"
        f'<div class="scroll"><table class="metrics"><tr><th class="l">metric</th>{head}</tr>{rows}</table></div>'
    )


def _ratio(value: float | None) -> str:
    return f"{value:.3g}x" if value is not None else "n/a"


def _plan_section(report: Report) -> str:
    """Static INT8 vs per token, per candidate; the per-token linears of mixed plans with their measured errors."""
    if not report.plans:
        return ""
    rows = "".join(
        f'<tr><td class="l">{escape(name)}</td><td>{p["linears"]}</td><td>{p["per_tensor"]}</td>'
        f'<td>{p["per_token"]}</td><td>{p["per_token_flops_share"]:.1%}</td></tr>'
        for name, p in report.plans.items()
    )
    intro = (
        "<p>Static per-tensor linears run as plain Q/DQ MatMuls, TensorRT's native INT8 path; per-token ones "
        "need sq-trt's plugin (or its portable subgraph). The plan is measured on calibration tokens "
        "(quant_plan.json in each export).</p>"
    )
    table = (
        '<table class="metrics"><tr><th class="l">candidate</th><th>linears</th><th>static per tensor</th>'
        f"<th>per token</th><th>per-token share of linear FLOPs</th></tr>{rows}</table>"
    )
    parts = ["<h2>Activation plan: static INT8 vs per token</h2>", intro, table]
    for name, plan in report.plans.items():
        if not plan["per_token"] or not plan["per_tensor"]:
            continue
        body = "".join(
            f'<tr><td class="l"><code>{escape(r["name"])}</code></td>'
            f"<td>{escape(format_value('', r['static_error']))}</td>"
            f"<td>{escape(format_value('', r['per_token_error']))}</td>"
            f"<td>{escape(_ratio(r['ratio']))}</td>"
            f'<td class="l">{escape(r["reason"])}</td></tr>'
            for r in plan["per_token_rows"]
        )
        parts.append(
            f"<p>Per-token linears of <b>{escape(name)}</b> (errors: output MSE over output power):</p>"
            '<div class="scroll"><table class="metrics"><tr><th class="l">linear</th><th>static error</th>'
            f'<th>per-token error</th><th>ratio</th><th class="l">why</th></tr>{body}</table></div>'
        )
    return "\n".join(parts)


def _baseline_ppl(report: Report) -> float | None:
    for cand in report.candidates:
        if "ppl_baseline" in cand["summary"]:
            return float(cand["summary"]["ppl_baseline"])
    return None


def _layers_table(report: Report) -> str:
    layers = report.layers
    if not layers:
        return "<p>No per-layer ranking in these results (run <code>sq-trt compare --rank-layers ...</code>).</p>"
    rows = "".join(
        f'<tr><td>{i + 1}</td><td class="l"><code>{escape(r["name"])}</code></td>'
        f"<td>{r['kl_leave_one_in']:.3g}</td><td>{r['output_error_ratio']:.3g}</td>"
        f"<td>{r['act_error_ratio']:.3g}</td><td>{r['weight_error_ratio']:.3g}</td>"
        f'<td class="wrap">{escape(r["suggestion"])}</td></tr>'
        for i, r in enumerate(layers["layers"])
    )
    return (
        f"<p>Model <code>{escape(str(layers.get('model', '')))}</code>. {escape(layers.get('method', ''))}; "
        f"activations {escape(layers.get('act_mode', ''))}, "
        f"{int(layers.get('positions', 0))} positions. KL with every layer quantized: "
        f"{layers.get('kl_all_layers', float('nan')):.4g}; sum of single-layer KLs: "
        f"{layers.get('kl_sum_of_layers', float('nan')):.4g}. Top {len(layers['layers'])} of "
        f"{layers.get('total_layers', len(layers['layers']))}.</p>"
        '<div class="scroll"><table><tr><th>#</th><th class="l">layer</th><th>KL leave-one-in</th>'
        "<th>output err / signal</th><th>activation part</th><th>weight part</th>"
        f'<th class="l">suggestion</th></tr>{rows}</table></div>'
    )


def _generation_section(report: Report) -> str:
    """Side-by-side greedy continuations (baseline vs each candidate), where compare generated text."""
    if not report.generation:
        return ""
    parts = ["<h2>Generated text: baseline vs candidate (greedy)</h2>"]
    for name, result in report.generation.items():
        rows = "".join(
            f'<tr><td class="l wrap">{escape(s["prompt"][-200:])}</td><td class="l wrap">{escape(s["baseline"])}</td>'
            f'<td class="l wrap">{escape(s["candidate"])}</td><td>{int(s["first_divergence"])}</td></tr>'
            for s in result.get("samples", [])
        )
        parts.append(
            f"<h3>{escape(name)}</h3><p>{int(result['prompts'])} prompts, {int(result['new_tokens'])} tokens each: "
            f"exact match {result['exact_match_rate']:.0%}, mean first divergence at token "
            f"{result['mean_first_divergence']:.1f}, teacher-forced top-1 {result['teacher_forced_top1']:.1%}.</p>"
            '<div class="scroll"><table><tr><th class="l">prompt (end)</th><th class="l">baseline</th>'
            f'<th class="l">{escape(name)}</th><th>first divergence</th></tr>{rows}</table></div>'
        )
    return "".join(parts)


def _figures(report: Report) -> str:
    return "".join(
        f'<figure><img alt="{escape(p.filename)}" src="data:image/png;base64,{base64.b64encode(p.png).decode()}">'
        f"<figcaption>{escape(p.caption)}</figcaption></figure>"
        for p in report.plots
    )


def _key_values(values: dict[str, Any]) -> str:
    rows = "".join(
        f'<tr><td class="l">{escape(str(k))}</td><td class="l wrap"><code>{escape(_text(v))}</code></td></tr>'
        for k, v in values.items()
    )
    return f"<table>{rows}</table>"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def render_html(report: Report) -> str:
    """The whole page as one string."""
    timing = report.timing
    runners = ", ".join(f"{escape(k)} {v:.1f} s" for k, v in timing.get("inference_s", {}).items())
    data = report.data
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(report.title)}</title><style>{_CSS}</style></head>
<body><main>
<h1>{escape(report.title)}</h1>
<p class="sub">{int(data.get("tokens", 0))} held-out tokens ({escape(str(data.get("source", "")))}, evaluation slice),
{int(data.get("iterations", 0))} batches; inference time per runner: {runners or "n/a"}.</p>
{_verdict(report)}
<h2>Metrics per candidate</h2>
{_metrics_table(report)}
{_generation_section(report)}
{_plan_section(report)}
<h2>Per-layer error ranking</h2>
{_layers_table(report)}
<h2>Plots</h2>
{_figures(report) or "<p>No plots.</p>"}
<h2>Provenance</h2>
{_key_values(report.provenance_items())}
</main></body></html>
"""
