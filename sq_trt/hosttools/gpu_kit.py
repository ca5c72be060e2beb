"""The GPU-host kit's analysis: which engine layers run INT8, plugin fusion, timings, one report.

``docker/gpu_host_kit.sh`` runs inside NVIDIA's TensorRT container on a GPU host:
it runs the GPU tests, the pipeline with TensorRT proper, ``trtexec`` timings, and
then ``python -m sq_trt.hosttools.gpu_kit report`` to fold everything into one Markdown +
JSON report next to the pipeline's own report. The functions here only read
files (engine-inspector JSON, ``trtexec`` logs, JUnit XML), so they are tested on
any machine.

The inspector JSON (``LayerInformationFormat.JSON`` at ``ProfilingVerbosity.DETAILED``)
lists layers with ``Name``, ``LayerType``, ``Inputs``, ``Outputs`` and ``TacticName``; each
tensor entry has a ``Name`` and a ``Format/Datatype`` string such as ``"Row major linear
Int8 format"``. Whether an engine's GEMMs run INT8 is decided from the kernel names
(:mod:`sq_trt.hosttools.gpu_kit_kernels`, the report's ``kernels``): boundary formats mislead inside
Myelin regions. :func:`analyze_layers` follows the formats only to see where the plugin's
INT8 output goes (``plugin_feeds_int8_gemm``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sq_trt.artifacts import atomic_write_text
from sq_trt.engine.releases import container_release
from sq_trt.errors import ArtifactError, SqTrtError
from sq_trt.hosttools.gpu_kit_kernels import classify_engine, encoding_of, parse_layer_log, verdict

_GEMM_WORDS = ("gemm", "matrixmultiply", "matmul", "convolution", "fullyconnected")
_PASS_THROUGH = ("reformat", "shuffle", "noop", "copy")


def _tensors(layer: dict[str, Any], side: str) -> list[dict[str, Any]]:
    entries = layer.get(side, [])
    return (
        [e if isinstance(e, dict) else {"Name": str(e)} for e in entries] if isinstance(entries, list) else []
    )


def _is_int8(tensor: dict[str, Any]) -> bool:
    return "int8" in str(tensor.get("Format/Datatype", "")).lower()


def _is_gemm(layer: dict[str, Any]) -> bool:
    text = (str(layer.get("LayerType", "")) + " " + str(layer.get("Name", ""))).lower().replace(" ", "")
    return any(word in text for word in _GEMM_WORDS)


def _is_plugin(layer: dict[str, Any], plugin_name: str) -> bool:
    text = (
        str(layer.get("LayerType", ""))
        + " "
        + str(layer.get("Name", ""))
        + " "
        + str(layer.get("PluginType", ""))
    )
    return (
        "plugin" in str(layer.get("LayerType", "")).lower()
        and plugin_name.lower() in text.lower()
        or (plugin_name in str(layer.get("Name", "")))
    )


def analyze_layers(info: dict[str, Any], plugin_name: str = "PerTokenQuant") -> dict[str, Any]:
    """Which GEMMs run INT8, and whether each per-token plugin's INT8 output feeds an INT8 GEMM.

    A consumer is followed through pass-through layers (reformat, shuffle), since
    TensorRT may insert a reformat between the plugin and the GEMM.

    Args:
        info: The parsed inspector JSON of one engine (``{"Layers": [...]}``).
        plugin_name: The plugin's name as it appears in layer names/types.

    Returns:
        ``layers``, ``gemms``, ``int8_gemms`` (names), ``plugins`` (per plugin layer: its
        INT8 outputs and the GEMMs they reach, with whether that GEMM's input is INT8)
        and ``plugin_feeds_int8_gemm`` (True only if every plugin output reaches an INT8 GEMM;
        None when there is no plugin layer).
    """
    layers = [layer for layer in info.get("Layers", []) if isinstance(layer, dict)]
    consumers: dict[str, list[dict[str, Any]]] = {}
    for layer in layers:
        for tensor in _tensors(layer, "Inputs"):
            consumers.setdefault(str(tensor.get("Name")), []).append(layer)
    gemms = [layer for layer in layers if _is_gemm(layer)]
    int8_gemms = [str(g.get("Name")) for g in gemms if any(_is_int8(t) for t in _tensors(g, "Inputs"))]

    def reach(tensor: str, depth: int = 0) -> list[tuple[dict[str, Any], str]]:
        found = []
        for consumer in consumers.get(tensor, []):
            kind = str(consumer.get("LayerType", "")).lower()
            if _is_gemm(consumer):
                found.append((consumer, tensor))
            elif depth < 3 and any(word in kind for word in _PASS_THROUGH):
                for out in _tensors(consumer, "Outputs"):
                    found.extend(reach(str(out.get("Name")), depth + 1))
        return found

    plugins: list[dict[str, Any]] = []
    for layer in layers:
        if not _is_plugin(layer, plugin_name):
            continue
        outputs = [t for t in _tensors(layer, "Outputs") if _is_int8(t)]
        feeds = []
        for tensor in outputs:
            for gemm, via in reach(str(tensor.get("Name"))):
                gemm_input = next((t for t in _tensors(gemm, "Inputs") if t.get("Name") == via), {})
                feeds.append(
                    {
                        "tensor": tensor.get("Name"),
                        "gemm": gemm.get("Name"),
                        "int8_input": _is_int8(gemm_input),
                    }
                )
        plugins.append(
            {"layer": layer.get("Name"), "int8_outputs": [t.get("Name") for t in outputs], "feeds": feeds}
        )
    fused: bool | None = None
    if plugins:
        fused = all(
            p["int8_outputs"] and p["feeds"] and all(f["int8_input"] for f in p["feeds"]) for p in plugins
        )
    return {
        "layers": len(layers),
        "gemms": len(gemms),
        "int8_gemms": int8_gemms,
        "plugins": plugins,
        "plugin_feeds_int8_gemm": fused,
    }


_NUMBER = r"([0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)"


def parse_trtexec(text: str) -> dict[str, float]:
    """The performance summary of a ``trtexec`` log.

    Reads ``Throughput: <x> qps`` and the ``Latency:`` and ``GPU Compute Time:``
    lines (``mean``, ``median``, ``percentile(99%)``, in ms).

    Raises:
        ArtifactError: The log has no performance summary (the run failed; the log says why).
    """
    result: dict[str, float] = {}
    throughput = re.search(r"Throughput:\s*" + _NUMBER + r"\s*qps", text)
    if throughput:
        result["throughput_qps"] = float(throughput.group(1))
    for label, key in (("Latency", "latency"), ("GPU Compute Time", "gpu_compute")):
        line = re.search(rf"\b{label}:\s*(min = .*)", text)
        if not line:
            continue
        for stat, name in (("mean", "mean"), ("median", "median"), (r"percentile\(99%\)", "p99")):
            match = re.search(rf"{stat}\s*=\s*{_NUMBER}\s*ms", line.group(1))
            if match:
                result[f"{key}_{name}_ms"] = float(match.group(1))
    if "throughput_qps" not in result or "latency_mean_ms" not in result:
        raise ArtifactError("the trtexec log has no performance summary (Throughput/Latency); the run failed")
    return result


def summarize_junit(path: Path) -> dict[str, Any]:
    """Totals and per-test outcomes of a pytest JUnit XML file."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise ArtifactError(f"cannot read the test results {path}: {exc}") from exc
    cases = []
    for case in root.iter("testcase"):
        outcome = "passed"
        detail = ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                detail = (node.get("message") or "").splitlines()[0] if node.get("message") else ""
                break
        cases.append(
            {"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome, "detail": detail}
        )
    totals: dict[str, int] = {}
    for entry in cases:
        totals[entry["outcome"]] = totals.get(entry["outcome"], 0) + 1
    return {"totals": totals, "cases": cases}


def _layer_info(directory: Path, target: str, layer_dir: Path | None) -> dict[str, Any] | None:
    """The engine's layer list: the build stage's inspector JSON, else what the kit's trtexec run wrote."""
    candidates = [directory / f"{target}.layers.json"]
    if layer_dir is not None:
        stem = f"{directory.name}__{target}"
        candidates += [layer_dir / f"{stem}.layers.json", layer_dir / f"{stem}.layers.log"]
    for path in candidates:
        if path.is_file():
            text = path.read_text(errors="replace")
            return parse_layer_log(text) if path.suffix == ".log" else dict(json.loads(text))
    return None


def collect_engines(engines_dir: Path, layer_dir: Path | None = None) -> dict[str, Any]:
    """Per engine: backend, plugins, inspector summary, INT8 GEMM kernels and the plugin analysis."""
    engines: dict[str, Any] = {}
    for manifest_path in sorted(engines_dir.glob("*/manifest.json")):
        directory = manifest_path.parent
        manifest = json.loads(manifest_path.read_text())
        for target, record in (manifest.get("extra", {}).get("engines") or {}).items():
            entry = {
                "plan": str(directory / record.get("plan", f"{target}.plan")),
                "backend": f"{record.get('backend')} {record.get('backend_version')}",
                "container_release": (record.get("builder") or {}).get("container_release"),
                "plugins": record.get("plugins", []),
                "layer_info": record.get("layer_info", {}),
            }
            info = _layer_info(directory, target, layer_dir)
            if info is not None:
                entry["analysis"] = analyze_layers(info)
                entry["kernels"] = classify_engine(info, entry["plugins"])
            engines[f"{directory.name}/{target}"] = entry
    return engines


def _table(rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(str(c) for c in rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows[1:]]
    return lines


def _engine_section(engines: dict[str, Any]) -> list[str]:
    lines = ["", "### Engines: INT8 GEMMs (from the kernels they run) and plugin fusion", ""]
    rows: list[list[Any]] = [
        [
            "engine",
            "backend",
            "encoding",
            "layers",
            "INT8 GEMM (kernel names)",
            "native INT8 GEMMs / sq-trt plugin layers",
            "plugin output -> INT8 GEMM",
        ]
    ]
    for name, engine in engines.items():
        analysis, kernels = engine.get("analysis"), engine.get("kernels")
        if analysis is None or kernels is None:
            reason = engine.get("layer_info", {}).get("reason", "no layer information")
            rows.append([name, engine["backend"], encoding_of(engine.get("plugins", [])), "-", "-", "-", reason])
            continue
        fused = analysis["plugin_feeds_int8_gemm"]
        fusion = "no plugin" if fused is None else ("yes" if fused else "NO (tensor formats; see JSON)")
        native = f"{kernels['native_int8_gemms']} / {kernels['plugin_layers']}"
        rows.append(
            [name, engine["backend"], kernels["encoding"], analysis["layers"], verdict(kernels), native, fusion]
        )
    lines += _table(rows)
    lines += [
        "",
        (
            "INT8 or not is read from each GEMM layer's kernel (TacticName: `i8`/`s8`/`imma` vs `f16`/`h16`), "
            "never from tensor types at layer boundaries, which Myelin regions report as Half around INT8 GEMMs."
        ),
    ]
    return lines


def render_markdown(kit: dict[str, Any], pipeline_report: str | None) -> str:
    """The GPU-host sections, appended to the pipeline's Markdown report (if given)."""
    lines = [pipeline_report.rstrip() + "\n" if pipeline_report else "", "## GPU host", ""]
    lines.append(f"Host: {kit.get('host', 'unknown')}")
    lines.append(
        f"Container release: {kit.get('container_release') or 'unknown (not in an NVIDIA container)'}"
    )
    if kit.get("smoke"):
        lines += ["", "### Smoke checks (docker/smoke.sh)", "", *[f"- {line}" for line in kit["smoke"]]]
    tests = kit.get("tests")
    lines += ["", "### GPU tests", ""]
    if tests:
        lines.append(", ".join(f"{k}: {v}" for k, v in sorted(tests["totals"].items())))
        failed = [c for c in tests["cases"] if c["outcome"] in ("failed", "error")]
        lines += [f"- FAILED {c['test']}: {c['detail']}" for c in failed]
    else:
        lines.append("not run")
    lines += _engine_section(kit.get("engines", {}))
    timings = kit.get("timings", [])
    lines += ["", "### Latency and throughput (trtexec)", ""]
    if timings:
        rows = [
            ["engine", "batch x seq", "latency mean ms", "p99 ms", "GPU compute mean ms", "throughput qps"]
        ]
        for t in timings:
            m = t.get("metrics", {})
            rows.append(
                [
                    t["engine"],
                    f"{t['batch']} x {t['seq']}",
                    m.get("latency_mean_ms", t.get("error", "-")),
                    m.get("latency_p99_ms", "-"),
                    m.get("gpu_compute_mean_ms", "-"),
                    m.get("throughput_qps", "-"),
                ]
            )
        lines += _table(rows)
    else:
        lines.append("not measured")
    return "\n".join(lines) + "\n"


def build_report(args: argparse.Namespace) -> dict[str, Any]:
    """Gather the kit's outputs (see ``report`` in :func:`main`)."""
    kit: dict[str, Any] = {
        "host": args.host,
        "container_release": args.container_release or container_release(),
    }
    if args.smoke and Path(args.smoke).is_file():
        kit["smoke"] = [
            line for line in Path(args.smoke).read_text().splitlines() if line.startswith(("PASS", "FAIL"))
        ]
    if args.junit and Path(args.junit).is_file():
        kit["tests"] = summarize_junit(Path(args.junit))
    kit["engines"] = collect_engines(Path(args.engines), Path(args.layer_info) if args.layer_info else None)
    timings = []
    for log in sorted(Path(args.timings).glob("*.log")) if args.timings else []:
        # File names are written by the kit: <engine>__<target>__b<batch>_s<seq>.log
        match = re.fullmatch(r"(.+)__(.+)__b(\d+)_s(\d+)", log.stem)
        if not match:
            continue
        entry: dict[str, Any] = {
            "engine": f"{match[1]}/{match[2]}",
            "batch": int(match[3]),
            "seq": int(match[4]),
        }
        try:
            entry["metrics"] = parse_trtexec(log.read_text(errors="replace"))
        except ArtifactError as exc:
            entry["error"] = str(exc)
        timings.append(entry)
    kit["timings"] = timings
    return kit


def _engine_record(engine_dir: Path, target: str) -> dict[str, Any]:
    manifest = json.loads((engine_dir / "manifest.json").read_text())
    record = (manifest.get("extra", {}).get("engines") or {}).get(target)
    if record is None:
        raise ArtifactError(f"{engine_dir}/manifest.json has no engine {target!r}")
    return dict(record)


def _profiles(record: dict[str, Any], where: str) -> list[dict[str, dict[str, list[int]]]]:
    profiles = [p.get("shapes", {}) for p in record.get("profiles", []) if isinstance(p, dict)]
    if not profiles or not all(profiles):
        raise ArtifactError(
            f"{where} records no optimization profiles, so the shapes the engine accepts are unknown; "
            "rebuild it with `sq-trt build --force`"
        )
    return profiles


def profile_shapes(engine_dir: Path, target: str) -> list[tuple[int, int]]:
    """The ``(batch, seq)`` points to time an engine at: each profile's ``opt`` and ``max``.

    Read from the engine manifest, so every point lies inside a profile the engine
    was built with (a shape outside every profile makes trtexec fail).

    Raises:
        ArtifactError: No manifest entry for ``target``, or it records no profiles.
    """
    points: list[tuple[int, int]] = []
    for shapes in _profiles(_engine_record(engine_dir, target), f"{engine_dir}/{target}"):
        first = next(iter(shapes.values()))
        for point in ("opt", "max"):
            dims = list(first[point])
            entry = (int(dims[0]), int(dims[1]) if len(dims) > 1 else 1)
            if entry not in points:
                points.append(entry)
    return points


def trtexec_args(engine_dir: Path, target: str, batch: int, seq: int) -> str:
    """``--shapes=... --profile=N`` for trtexec: every engine input at ``batch x seq``.

    Axis 0 of each input is the batch, axis 1 the sequence, further axes take the
    profile's ``opt`` value; the first profile that accepts the shapes is chosen.

    Raises:
        ArtifactError: No manifest entry for ``target``, no profiles, or ``batch x seq``
            outside every profile (the message lists their ranges).
    """
    where = f"{engine_dir}/{target}"
    profiles = _profiles(_engine_record(engine_dir, target), where)
    for index, shapes in enumerate(profiles):
        chosen = {}
        for name, bounds in shapes.items():
            dims = [batch, seq, *bounds["opt"][2:]][: len(bounds["opt"])]
            if not all(lo <= d <= hi for d, lo, hi in zip(dims, bounds["min"], bounds["max"], strict=True)):
                break
            chosen[name] = "x".join(str(d) for d in dims)
        else:
            listed = ",".join(f"{name}:{dims}" for name, dims in chosen.items())
            return f"--shapes={listed} --profile={index}"
    ranges = "; ".join(
        f"profile {i}: " + ", ".join(f"{n} {b['min']}..{b['max']}" for n, b in shapes.items())
        for i, shapes in enumerate(profiles)
    )
    raise ArtifactError(
        f"{where} accepts no input at batch {batch} x seq {seq} ({ranges}); choose SHAPES inside a profile"
    )


def trtexec_shapes(engine_dir: Path, target: str, batch: int, seq: int) -> str:
    """The ``--shapes`` value of :func:`trtexec_args` (``input_ids:4x512``)."""
    return trtexec_args(engine_dir, target, batch, seq).split()[0].removeprefix("--shapes=")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sq_trt.hosttools.gpu_kit report --engines DIR --out DIR [--junit F] [--timings DIR] [--pipeline-report F]``."""
    parser = argparse.ArgumentParser(prog="python -m sq_trt.hosttools.gpu_kit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    report = sub.add_parser("report", help="fold tests, engine analysis and timings into gpu_host.{md,json}")
    report.add_argument("--engines", required=True, help="the pipeline's engines directory")
    report.add_argument("--out", required=True, help="directory for gpu_host.md / gpu_host.json")
    report.add_argument("--junit", help="pytest --junitxml file of the GPU tests")
    report.add_argument("--timings", help="directory of trtexec logs named <engine>__<target>__b<B>_s<S>.log")
    report.add_argument("--pipeline-report", help="the pipeline's report.md, prepended to the GPU sections")
    report.add_argument("--host", default="", help="GPU and driver description")
    report.add_argument(
        "--container-release", help="NVIDIA container release (default: from the environment)"
    )
    report.add_argument("--smoke", help="docker/smoke.sh's output (its PASS/FAIL lines go in the report)")
    report.add_argument(
        "--layer-info", help="directory of trtexec layer info: <engine>__<target>.layers.json or .layers.log"
    )
    shapes = sub.add_parser("shapes", help="print trtexec's --shapes/--profile for an engine at batch x seq")
    shapes.add_argument("plan", help="the .plan file (its directory holds manifest.json)")
    shapes.add_argument("batch", type=int)
    shapes.add_argument("seq", type=int)
    points = sub.add_parser("profile-shapes", help="print the BxS points to time (each profile's opt, max)")
    points.add_argument("plan", help="the .plan file (its directory holds manifest.json)")
    args = parser.parse_args(argv)
    if args.command in ("shapes", "profile-shapes"):
        plan = Path(args.plan)
        try:
            if args.command == "shapes":
                print(trtexec_args(plan.parent, plan.stem, args.batch, args.seq))
            else:
                print(" ".join(f"{b}x{s}" for b, s in profile_shapes(plan.parent, plan.stem)))
        except (SqTrtError, OSError, json.JSONDecodeError) as exc:
            print(f"gpu_kit: error: {exc}", file=sys.stderr)
            return 1
        return 0
    try:
        kit = build_report(args)
        out = Path(args.out)
        pipeline_md = Path(args.pipeline_report).read_text() if args.pipeline_report else None
        atomic_write_text(out / "gpu_host.json", json.dumps(kit, indent=2, default=str) + "\n")
        atomic_write_text(out / "gpu_host.md", render_markdown(kit, pipeline_md))
    except (SqTrtError, OSError) as exc:
        print(f"gpu_kit: error: {exc}", file=sys.stderr)
        return 1
    print(f"gpu_kit: wrote {out / 'gpu_host.md'} and {out / 'gpu_host.json'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
