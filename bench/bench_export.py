"""Benchmark of the export stage on the demo model (not a test).

calibrate -> smooth -> export (per-token plugin, per-token portable, per-tensor), then
perplexity on held-out embedded text through ONNX Runtime for every file, next to
the PyTorch figures (FP32 and W8A8 fake quantization) on the same tokens.
Writes machine-readable JSON to bench/results/export.json.

    python bench/bench_export.py                      # defaults: demo, 32 x 512 calib, 16384 eval tokens
    python bench/bench_export.py --eval-tokens 4096   # quicker
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write its JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="demo")
    parser.add_argument("--calib-samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--eval-tokens", type=int, default=16384)
    parser.add_argument("--alpha", default="0.8")
    parser.add_argument("--work", default="/tmp/sq-trt-bench-export")
    parser.add_argument("--out", default=str(RESULTS / "export.json"))
    parser.add_argument(
        "--reuse-calibration",
        action="store_true",
        help="keep <work>/calib from an earlier run (same settings)",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["per_token_plugin", "per_tensor", "per_token_portable"],
        choices=["per_token_plugin", "per_tensor", "per_token_portable"],
    )
    args = parser.parse_args(argv)

    import torch

    from sq_trt.artifacts import atomic_write_text, load_smoothed
    from sq_trt.cli import main as cli
    from sq_trt.data import load_slices, tokenize_chunks
    from sq_trt.quant.fakequant import apply_fake_quant
    from sq_trt.runtime.onnx import OnnxModelRunner
    from sq_trt.runtime.perplexity import perplexity

    work = Path(args.work)
    timings: dict[str, float] = {}
    if not (args.reuse_calibration and (work / "calib" / "manifest.json").is_file()):
        _, timings["calibrate_s"] = _timed(
            cli,
            [
                "calibrate",
                "--model",
                args.model,
                "--samples",
                str(args.calib_samples),
                "--seq-len",
                str(args.seq_len),
                "--out",
                str(work / "calib"),
                "--force",
                "--no-progress",
            ],
        )
    _, timings["smooth_s"] = _timed(
        cli,
        [
            "smooth",
            "--model",
            args.model,
            "--act-scales",
            str(work / "calib"),
            "--alpha",
            args.alpha,
            "--out",
            str(work / "smooth"),
            "--force",
            "--no-progress",
        ],
    )
    variants = {
        "per_token_plugin": ["--act-mode", "per-token", "--per-token-encoding", "plugin"],
        "per_token_portable": ["--act-mode", "per-token", "--per-token-encoding", "portable"],
        "per_tensor": ["--act-mode", "per-tensor"],
    }
    manifests: dict[str, Any] = {}
    variants = {name: flags for name, flags in variants.items() if name in args.variants}
    for name, flags in variants.items():
        rc, timings[f"export_{name}_s"] = _timed(
            cli, ["export", "--smoothed", str(work / "smooth"), *flags, "--out", str(work / name), "--force"]
        )
        assert rc == 0, f"export {name} failed"
        manifests[name] = json.loads((work / name / "manifest.json").read_text())["extra"]

    loaded, scales = load_smoothed(work / "smooth")
    _, evaluation = load_slices()
    chunks = tokenize_chunks(
        loaded.tokenizer,
        evaluation,
        seq_len=args.seq_len,
        max_chunks=max(1, args.eval_tokens // args.seq_len),
    )
    ppl: dict[str, float] = {}
    ppl["pytorch_fp32_smoothed"], timings["ppl_pytorch_fp32_s"] = _timed(
        perplexity, loaded.model, chunks, progress=False
    )
    for mode in ("per_token", "per_tensor"):
        fq = copy.deepcopy(loaded.model)
        apply_fake_quant(fq, scales, act_mode=mode)
        ppl[f"pytorch_w8a8_{mode}"], timings[f"ppl_pytorch_{mode}_s"] = _timed(
            perplexity, fq, chunks, progress=False
        )
        del fq
    files = {"ort_fp16": work / args.variants[0] / "model.fp16.onnx"}
    files.update({f"ort_int8_{name}": work / name / "model.int8.onnx" for name in variants})
    for name, path in files.items():
        runner = OnnxModelRunner(path)
        ppl[name], timings[f"ppl_{name}_s"] = _timed(perplexity, runner.run, chunks, progress=False)
        del runner
    result = {
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "model": args.model,
        "params": sum(p.numel() for p in loaded.model.parameters()),
        "calibration": {"samples": args.calib_samples, "seq_len": args.seq_len, "alpha": args.alpha},
        "evaluation": {
            "tokens": int(chunks.numel()),
            "chunks": int(chunks.shape[0]),
            "seq_len": args.seq_len,
        },
        "perplexity": ppl,
        "sizes_bytes": {name: m["sizes"] for name, m in manifests.items()},
        "size_ratio_int8_over_fp16": {name: m["size_ratio_int8_over_fp16"] for name, m in manifests.items()},
        "size_ratio_int8_over_fp32": {name: m["size_ratio_int8_over_fp32"] for name, m in manifests.items()},
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "torch_threads": torch.get_num_threads(),
        },
    }
    atomic_write_text(args.out, json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
