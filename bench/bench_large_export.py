"""Export of a model over 2 GB: the external-data path at real size (not a test).

A random-weight 1.24 B-parameter Llama (the Llama-3.2-1B shape, see
``bench/bench_pipeline.py``) is exported with ``sq-trt export`` in a child process
(per-token, portable encoding: no calibration needed), then:

* both files are checked with ``onnx.checker`` by path (the only way for > 2 GB);
* ONNX Runtime loads each file with its external data and runs 2 x 16 tokens;
  the FP16 logits are compared with PyTorch FP32, the INT8 logits with the
  PyTorch W8A8 fake-quant reference (same tokens);
* wall time and peak anonymous / file-backed memory of the export process are recorded
  (the fp32 checkpoint is memory-mapped, so it shows as file-backed).

    python bench/bench_large_export.py [--ckpt /tmp/llama-1b-random] [--work /tmp/sq-trt-large-export]

Results: ``bench/results/large_export.json``. ``--layers N`` exports the same shape with N decoder
layers (4: 0.5 B parameters, for measuring changes cheaply); ``--phases`` marks the export's
phases (model load, fp16 copy, trace, FP16 write, INT8 rewrite, INT8 save) in the child and
reports the peak anonymous memory sampled inside each (``phases`` in the JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


# Functions whose calls mark a phase in the ``--phases`` child: (module, attribute, phase name).
PHASES = (
    ("sq_trt.models.loading", "load_model", "load model"),
    ("sq_trt.models.loading", "LoadedModel.fingerprint", "fingerprint"),
    ("sq_trt.export.onnx_export", "model_in_dtype", "fp16 torch copy"),
    ("torch.onnx", "export", "torch.onnx.export (trace)"),
    ("onnxscript.optimizer", "optimize_ir", "optimize IR"),
    ("onnx_ir", "to_proto", "IR -> proto"),
    ("sq_trt.export.onnx_export", "write_ir", "write FP16 file from the IR"),
    ("sq_trt.export.stage", "targets_from_model", "INT8 targets"),
    ("sq_trt.export.stage", "save_onnx", "save"),
    ("sq_trt.export.stage", "internalize", "read back kept tensors"),
    ("sq_trt.export.stage", "quantize_graph", "INT8 rewrite"),
    ("sq_trt.export.stage", "lint_qdq", "lint"),
)


def _run_sampling_memory(
    command: list[str], samples: list[tuple[float, int]] | None = None
) -> dict[str, int]:
    """Run ``command``, sampling its /proc status every 0.1 s from outside; peak RssAnon / RssFile bytes.

    Sampled from another process on purpose: a thread inside the exporter cannot sample
    while a long C call (protobuf serialisation) holds the GIL, and misses the peaks.
    ``samples`` receives ``(time.time(), RssAnon bytes)`` for each sample.
    """
    peak = {"RssAnon": 0, "RssFile": 0}
    proc = subprocess.Popen(command)
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status") as status:
                for line in status:
                    key = line.split(":")[0]
                    if key in peak:
                        value = int(line.split()[1]) * 1024
                        peak[key] = max(peak[key], value)
                        if key == "RssAnon" and samples is not None:
                            samples.append((time.time(), value))
        except (FileNotFoundError, ProcessLookupError):
            pass
        time.sleep(0.1)
    if proc.returncode != 0:
        raise SystemExit(f"export failed with exit code {proc.returncode}")
    return peak


def _child_with_phases(marks: str, cli_args: list[str]) -> int:
    """Run ``sq-trt <cli_args>`` with each :data:`PHASES` function writing begin/end times to ``marks``."""
    import functools
    import importlib

    from sq_trt.cli import main as cli_main

    log = open(marks, "a", buffering=1)  # noqa: SIM115 - open for the child's whole life

    def wrap(function, name):
        @functools.wraps(function)
        def marked(*args, **kwargs):
            log.write(f"{time.time()} begin {name}\n")
            try:
                return function(*args, **kwargs)
            finally:
                log.write(f"{time.time()} end {name}\n")

        return marked

    for module_name, path, name in PHASES:
        owner = importlib.import_module(module_name)
        *parents, attribute = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent)
        setattr(owner, attribute, wrap(getattr(owner, attribute), name))
    return cli_main(cli_args)


def _phase_peaks(marks: Path, samples: list[tuple[float, int]]) -> list[dict[str, object]]:
    """Per phase call (in order): duration, anonymous memory at its start and its peak inside."""
    events = [line.split(" ", 2) for line in marks.read_text().splitlines()]
    open_at: dict[str, list[float]] = {}
    phases = []
    for stamp, kind, name in events:
        if kind == "begin":
            open_at.setdefault(name, []).append(float(stamp))
            continue
        start, end = open_at[name].pop(), float(stamp)
        inside = [rss for t, rss in samples if start <= t <= end]
        before = [rss for t, rss in samples if t <= start]
        phases.append({
            "phase": name, "start_s": round(start - float(events[0][0]), 1), "seconds": round(end - start, 1),
            "anon_at_start_bytes": before[-1] if before else None,
            "peak_anon_bytes": max(inside) if inside else None,
        })  # fmt: skip
    return sorted(phases, key=lambda p: p["start_s"])


def _check_files(out: Path, ckpt: Path) -> tuple[dict, dict]:
    """``onnx.checker`` by path and ONNX Runtime against PyTorch, for both files."""
    import numpy as np
    import onnx
    import torch

    from sq_trt.compare.metrics import kl_divergence, topk_agreement
    from sq_trt.models.loading import load_model
    from sq_trt.quant.fakequant import apply_fake_quant
    from sq_trt.runtime.onnx import OnnxModelRunner

    files = {}
    for name in ("model.fp16.onnx", "model.int8.onnx"):
        path = out / name
        onnx.checker.check_model(str(path))  # by path: the proto is over 2 GB with its data
        files[name] = {
            "onnx_bytes": path.stat().st_size,
            "external_data_bytes": (out / f"{name}.data").stat().st_size
            if (out / f"{name}.data").is_file()
            else 0,
        }
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    loaded = load_model(str(ckpt))
    with torch.inference_mode():
        fp32 = loaded.model(input_ids=ids, use_cache=False).logits.float().numpy()
        apply_fake_quant(loaded.model, None, act_mode="per_token")
        w8a8 = loaded.model(input_ids=ids, use_cache=False).logits.float().numpy()
    del loaded
    checks = {}
    for name, reference in (("model.fp16.onnx", fp32), ("model.int8.onnx", w8a8)):
        load_start = time.perf_counter()
        runner = OnnxModelRunner(out / name)
        load_s = time.perf_counter() - load_start
        logits = runner.run(ids)
        del runner
        checks[name] = {
            "session_load_s": round(load_s, 1),
            "finite": bool(np.isfinite(logits).all()),
            "max_abs_diff": float(np.abs(logits - reference).max()),
            "reference_abs_max": float(np.abs(reference).max()),
            "kl_mean": float(
                kl_divergence(
                    reference.reshape(-1, reference.shape[-1]), logits.reshape(-1, logits.shape[-1])
                ).mean()
            ),
            "top1_agreement": float(topk_agreement(reference, logits, 1).mean()),
        }
    return files, checks


def main(argv: list[str] | None = None) -> int:
    """Run the export and the checks; write the JSON."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child-phases"]:  # before argparse: the export's own flags (--out) pass through
        return _child_with_phases(argv[1], argv[2:])
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ckpt", default="/tmp/llama-1b-random")
    parser.add_argument("--work", default="/tmp/sq-trt-large-export")
    parser.add_argument("--out", default=str(RESULTS / "large_export.json"))
    parser.add_argument(
        "--layers", type=int, default=None, help="decoder layers (default: the 1B shape's 16)"
    )
    parser.add_argument("--phases", action="store_true", help="record the peak memory of each export phase")
    parser.add_argument("--export-only", action="store_true", help="skip the checker and ONNX Runtime checks")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT / "bench"))
    from bench_pipeline import make_checkpoint

    ckpt, work = Path(args.ckpt), Path(args.work)
    if args.layers is not None and args.ckpt == parser.get_default("ckpt"):
        ckpt = Path(f"{args.ckpt}-{args.layers}l")
    if not (ckpt / "config.json").is_file():
        ckpt.mkdir(parents=True, exist_ok=True)
        make_checkpoint(ckpt, layers=args.layers)
    out = work / "export"
    export_args = [
        "export", "--model", str(ckpt), "--act-mode", "per-token",
        "--per-token-encoding", "portable", "--out", str(out), "--force",
    ]  # fmt: skip
    marks = work / "phases.log"
    work.mkdir(parents=True, exist_ok=True)
    if args.phases:
        marks.unlink(missing_ok=True)
        command = [sys.executable, str(Path(__file__).resolve()), "--child-phases", str(marks), *export_args]
    else:
        command = [sys.executable, "-m", "sq_trt.cli", *export_args]
    samples: list[tuple[float, int]] = []
    start = time.perf_counter()
    peak = _run_sampling_memory(command, samples)
    export_s = time.perf_counter() - start
    phases = _phase_peaks(marks, samples) if args.phases else None
    manifest = json.loads((out / "manifest.json").read_text())
    files: dict[str, dict[str, int]] = {}
    checks: dict[str, dict[str, object]] = {}
    if not args.export_only:
        files, checks = _check_files(out, ckpt)
    result = {
        "command": "python " + " ".join([sys.argv[0], *argv]),
        "float_weights_bytes": manifest["extra"].get("float_weights_bytes"),
        "sizes": manifest["extra"]["sizes"],
        "files": files,
        "export_wall_s": round(export_s, 1),
        "export_peak_anon_bytes": peak["RssAnon"],
        "export_peak_file_backed_bytes": peak["RssFile"],
        **({"phases": phases} if phases is not None else {}),
        "layers": args.layers,
        "checks": checks,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    RESULTS.mkdir(exist_ok=True)
    from sq_trt.artifacts import atomic_write_text

    atomic_write_text(args.out, json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
