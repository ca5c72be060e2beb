"""What ONNX Runtime's Q/DQ fusion does to a per-tensor INT8 graph on this CPU (not a test).

ONNX Runtime fuses ``QuantizeLinear -> DequantizeLinear -> MatMul`` of a float32 graph
into ``MatMulIntegerToFloat``. Its u8s8 kernel on AVX2 CPUs without VNNI sums pairs of
products in 16 bits (``vpmaddubsw``) and saturates; TensorRT sums INT8 products in
int32. ``sq_trt.runtime.onnx.session_options`` turns the fusion off. This script
measures the perplexity of the smoothed demo model's per-tensor file
(``--int8-dtype float32``) three ways on held-out embedded text:

* ``reference``: the PyTorch W8A8 fake-quant model (float32), what the graph means;
* ``runner``: ONNX Runtime with sq-trt's session options (what ``compare`` uses);
* ``ort_default``: ONNX Runtime with its default options (fusion on).

It also records which integer kernels each session's optimized graph holds, and the
CPU's SIMD flags (the result depends on them: with VNNI the fused kernel is exact).

    python bench/bench_ort_qdq.py --work /tmp/sq-trt-bench-ortqdq

``--work`` gets ``calib/`` and ``smooth/`` (32 x 512 calibration tokens, alpha 0.8,
as ``bench/bench_export.py``) and ``per_tensor_fp32/`` unless they are already there.
Results: ``bench/results/ort_qdq.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
INTEGER_KERNELS = ("MatMulIntegerToFloat", "MatMulInteger", "QLinearMatMul", "DynamicQuantizeMatMul")
SIMD_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def _cli(argv: list[str]) -> None:
    from sq_trt.cli import main as cli

    rc = cli(argv)
    if rc != 0:
        raise SystemExit(f"sq-trt {argv[0]} failed ({rc})")


def _cpu_flags() -> dict[str, bool]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []
    )
    return {flag: flag in flags for flag in SIMD_FLAGS}


def _session(path: Path, options: Any) -> tuple[Any, dict[str, int]]:
    """A session for ``path`` under ``options``, and the integer kernels in its optimized graph."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="sq-trt-ortqdq-") as tmp:
        options.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath, load_external_data=False).graph
    counts = {op: sum(node.op_type == op for node in graph.node) for op in INTEGER_KERNELS}
    return session, {op: n for op, n in counts.items() if n}


def main(argv: list[str] | None = None) -> int:
    """Run the measurement and write its JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", default="/tmp/sq-trt-bench-ortqdq")
    parser.add_argument("--calib-samples", type=int, default=32)
    parser.add_argument("--alpha", default="0.8")
    parser.add_argument("--eval-tokens", type=int, default=4096)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--out", default=str(RESULTS / "ort_qdq.json"))
    args = parser.parse_args(argv)

    import onnxruntime as ort
    import torch

    from sq_trt.artifacts import atomic_write_text, load_smoothed
    from sq_trt.data import load_slices, tokenize_chunks
    from sq_trt.quant.fakequant import apply_fake_quant
    from sq_trt.runtime.onnx import OnnxModelRunner, session_options
    from sq_trt.runtime.perplexity import perplexity

    work = Path(args.work)
    start = time.perf_counter()
    common = ["--force", "--no-progress"]
    if not (work / "calib" / "manifest.json").is_file():
        calib = ["calibrate", "--model", "demo", "--samples", str(args.calib_samples)]
        _cli([*calib, "--seq-len", str(args.seq_len), "--out", str(work / "calib"), *common])
    if not (work / "smooth" / "manifest.json").is_file():
        smooth = ["smooth", "--model", "demo", "--act-scales", str(work / "calib"), "--alpha", args.alpha]
        _cli([*smooth, "--out", str(work / "smooth"), *common])
    onnx_path = work / "per_tensor_fp32" / "model.int8.onnx"
    if not (work / "per_tensor_fp32" / "manifest.json").is_file():
        flags = ["--act-mode", "per-tensor", "--int8-dtype", "float32"]
        _cli(
            ["export", "--smoothed", str(work / "smooth"), *flags, "--out", str(onnx_path.parent), "--force"]
        )
    print(f"prepared in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)

    loaded, scales = load_smoothed(work / "smooth")
    _, evaluation = load_slices()
    chunks = tokenize_chunks(
        loaded.tokenizer,
        evaluation,
        seq_len=args.seq_len,
        max_chunks=max(1, args.eval_tokens // args.seq_len),
    )
    ppl: dict[str, float] = {}
    kernels: dict[str, dict[str, int]] = {}
    wall: dict[str, float] = {}
    fake_quant = copy.deepcopy(loaded.model)
    apply_fake_quant(fake_quant, scales, act_mode="per_tensor")
    t0 = time.perf_counter()
    ppl["reference"] = perplexity(fake_quant, chunks, progress=False)
    wall["reference"] = time.perf_counter() - t0
    del fake_quant
    for name, options in (("runner", session_options()), ("ort_default", ort.SessionOptions())):
        runner = OnnxModelRunner(onnx_path)
        runner.session, kernels[name] = _session(onnx_path, options)
        t0 = time.perf_counter()
        ppl[name] = perplexity(runner.run, chunks, progress=False)
        wall[name] = time.perf_counter() - t0
        print(f"{name}: ppl {ppl[name]:.3f}, integer kernels {kernels[name]}", file=sys.stderr, flush=True)
        del runner

    result = {
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "smoothed": json.loads((work / "smooth" / "manifest.json").read_text()).get("config"),
        "evaluation": {
            "tokens": int(chunks.numel()),
            "chunks": int(chunks.shape[0]),
            "seq_len": args.seq_len,
        },
        "perplexity": ppl,
        "gap_vs_reference_pct": {k: round(100 * (v / ppl["reference"] - 1), 3) for k, v in ppl.items()},
        "integer_kernels": kernels,
        "eval_wall_s": {k: round(v, 1) for k, v in wall.items()},
        "wall_s": round(time.perf_counter() - start, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "cpu_flags": _cpu_flags(),
            "onnxruntime": ort.__version__,
            "torch_threads": torch.get_num_threads(),
        },
    }
    atomic_write_text(args.out, json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps({"perplexity": ppl, "integer_kernels": kernels}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
