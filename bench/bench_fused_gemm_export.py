"""The demo's fused-gemm export against the portable one and the PyTorch W8A8 reference (not a test).

For each graph dtype (``float32``, the comparison setting, and ``float16``, the deployment
files), one float export of SmolLM2-135M (unsmoothed, per-token W8A8) is rewritten into
the ``portable`` and the ``fused-gemm`` per-token encodings, and each graph's perplexity
is measured through ONNX Runtime (``sq_trt.runtime.onnx``: every ``sq_trt`` node
rewritten into standard ops, the exact integer GEMM in float32 chunks of K <= 1024) on the embedded text's
held-out slice. The PyTorch W8A8 fake-quant model (float32) and FP32 are the anchors.

    OMP_NUM_THREADS=2 python bench/bench_fused_gemm_export.py [--chunks 32] [--seq-len 256]

Results: ``bench/results/fused_gemm_export.json``; page: docs/benchmarks/fused_gemm_export.md.
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
ENCODINGS = ("portable", "fused-gemm")


def _graphs(loaded: Any, dtype: str) -> dict[str, Any]:
    import onnx

    from sq_trt.export.fused import norm_groups_from_model
    from sq_trt.export.onnx_export import WRAPPED_PREFIX, export_float_onnx
    from sq_trt.export.qdq import quantize_graph, targets_from_model
    from sq_trt.models.registry import quantizable_linears

    names = quantizable_linears(loaded.model)
    base = export_float_onnx(loaded.model, loaded.spec, dtype=dtype)
    graphs: dict[str, Any] = {}
    for encoding in ENCODINGS:
        graph = base if encoding == ENCODINGS[-1] else onnx.ModelProto()
        if graph is not base:
            graph.CopyFrom(base)
        targets = targets_from_model(
            loaded.model, names, weight_layout="linear", input_amax=None, prefix=WRAPPED_PREFIX
        )
        groups = norm_groups_from_model(loaded.model, names, prefix=WRAPPED_PREFIX)
        quantize_graph(
            graph, targets, act_mode="per_token", encoding=encoding, act_dtype=dtype, norm_groups=groups
        )
        graphs[encoding] = graph
    return graphs


def _ort_row(graph: Any, chunks: Any) -> dict[str, float]:
    from sq_trt.runtime.onnx import OnnxModelRunner
    from sq_trt.runtime.perplexity import perplexity

    start, cpu = time.perf_counter(), time.process_time()
    runner = OnnxModelRunner(graph)
    ppl = perplexity(runner.run, chunks, progress=False)
    return {
        "perplexity": round(ppl, 4),
        "wall_s": round(time.perf_counter() - start, 1),
        "cpu_s": round(time.process_time() - cpu, 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write its JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chunks", type=int, default=32, help="held-out chunks (default 32)")
    parser.add_argument("--seq-len", type=int, default=256, help="tokens per chunk (default 256)")
    parser.add_argument("--dtypes", default="float32,float16", help="graph dtypes, comma-separated")
    parser.add_argument("--out", default=str(RESULTS / "fused_gemm_export.json"))
    args = parser.parse_args(argv)

    from sq_trt.data import load_slices, tokenize_chunks
    from sq_trt.models.loading import load_model
    from sq_trt.quant.fakequant import apply_fake_quant
    from sq_trt.runtime.perplexity import perplexity

    loaded = load_model("demo")
    _, evaluation = load_slices()
    chunks = tokenize_chunks(loaded.tokenizer, evaluation, seq_len=args.seq_len, max_chunks=args.chunks)
    fake_quant = copy.deepcopy(loaded.model)
    apply_fake_quant(fake_quant, None, act_mode="per_token")
    report: dict[str, Any] = {
        "model": "demo (SmolLM2-135M-Instruct), unsmoothed, per-token W8A8",
        "predictions": int(chunks.shape[0] * (chunks.shape[1] - 1)),
        "fp32": round(perplexity(loaded.model, chunks, progress=False), 4),
        "reference_w8a8": round(perplexity(fake_quant, chunks, progress=False), 4),
        "rows": {},
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
        },
        "threads": os.environ.get("OMP_NUM_THREADS"),
    }
    del fake_quant
    for dtype in args.dtypes.split(","):
        graphs = _graphs(loaded, dtype)
        rows = {encoding: _ort_row(graphs.pop(encoding), chunks) for encoding in ENCODINGS}
        fused, portable = rows["fused-gemm"]["perplexity"], rows["portable"]["perplexity"]
        rows["fused_vs_portable_pct"] = round(100 * (fused / portable - 1), 3)
        rows["fused_vs_reference_pct"] = round(100 * (fused / report["reference_w8a8"] - 1), 3)
        report["rows"][dtype] = rows
        print(json.dumps({dtype: rows}), flush=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
