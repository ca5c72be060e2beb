"""Accuracy cost of the O3 option (INT8 attention BMM inputs) on the demo model (not a test).

calibrate -> smooth (auto alpha + v->o / up->down pairs, the per-token recipe) -> export
per-token portable with and without ``--quantize-bmm``; perplexity on held-out embedded
text of the PyTorch reference (W8A8 linears, then + BMM fake quantization) and of both
INT8 files through ONNX Runtime (float16 activations).

    python bench/bench_bmm.py [--work /tmp/bmm-bench] [--eval-tokens 4096]

Results: ``bench/results/bmm.json``.
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

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write its JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", default="/tmp/bmm-bench")
    parser.add_argument("--eval-tokens", type=int, default=4096)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--out", default=str(RESULTS / "bmm.json"))
    args = parser.parse_args(argv)

    import torch

    from sq_trt.artifacts import atomic_write_text, load_smoothed
    from sq_trt.cli import main as cli
    from sq_trt.data import load_slices, tokenize_chunks
    from sq_trt.quant.attention import bmm_fake_quant, bmm_ranges
    from sq_trt.quant.fakequant import apply_fake_quant
    from sq_trt.runtime.onnx import OnnxModelRunner
    from sq_trt.runtime.perplexity import perplexity

    work = Path(args.work)
    start = time.perf_counter()
    steps = [
        ["calibrate", "--model", "demo", "--out", str(work / "calib"), "--force", "--no-progress"],
        ["smooth", "--model", "demo", "--act-scales", str(work / "calib"), "--alpha", "auto",
         "--smooth-linear-pairs", "--out", str(work / "smooth"), "--force", "--no-progress"],
        ["export", "--smoothed", str(work / "smooth"), "--per-token-encoding", "portable",
         "--out", str(work / "w8a8"), "--force"],
        ["export", "--smoothed", str(work / "smooth"), "--per-token-encoding", "portable", "--quantize-bmm",
         "--out", str(work / "o3"), "--force"],
    ]  # fmt: skip
    for step in steps:
        if cli(step) != 0:
            raise SystemExit(f"step failed: {step}")
    loaded, scales = load_smoothed(work / "smooth")
    _, evaluation = load_slices()
    chunks = tokenize_chunks(
        loaded.tokenizer,
        evaluation,
        seq_len=args.seq_len,
        max_chunks=max(1, args.eval_tokens // args.seq_len),
    )
    ppl: dict[str, float] = {"pytorch_fp32": perplexity(loaded.model, chunks, progress=False)}
    fq = copy.deepcopy(loaded.model)
    apply_fake_quant(fq, scales, act_mode="per_token")
    ppl["pytorch_w8a8_per_token"] = perplexity(fq, chunks, progress=False)
    ranges = bmm_ranges(loaded.model, scales.bmm_amax, scales.output_amax)
    with bmm_fake_quant(fq, ranges):
        ppl["pytorch_w8a8_per_token_o3"] = perplexity(fq, chunks, progress=False)
    del fq
    for name in ("w8a8", "o3"):
        ppl[f"ort_int8_{name}"] = perplexity(OnnxModelRunner(work / name / "model.int8.onnx").run, chunks, progress=False)
    ppl["ort_fp16"] = perplexity(OnnxModelRunner(work / "w8a8" / "model.fp16.onnx").run, chunks, progress=False)
    p_ranges = sorted(v for k, v in ranges.items() if k.endswith(".p"))
    result = {
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "evaluation": {
            "tokens": int(chunks.numel()),
            "chunks": int(chunks.shape[0]),
            "seq_len": args.seq_len,
        },
        "perplexity": ppl,
        "increase_pct_vs_fp32": {k: round(100 * (v / ppl["pytorch_fp32"] - 1), 3) for k, v in ppl.items()},
        "bmm_ranges_summary": {
            "q_max": max(v for k, v in ranges.items() if k.endswith(".q")),
            "k_max": max(v for k, v in ranges.items() if k.endswith(".k")),
            "v_max": max(v for k, v in ranges.items() if k.endswith(".v")),
            "p_min_max": [p_ranges[0], p_ranges[-1]],
        },
        "wall_s": round(time.perf_counter() - start, 1),
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
