"""Benchmark: AOT compile of the plugin kernels to PTX, per kernel, layout and GPU architecture.

No GPU here, so kernel throughput cannot be measured (the CPU interpreter's speed
means nothing); this records what the engine build pays and embeds: cold compile
time (Triton's own cache disabled via a fresh ``TRITON_CACHE_DIR``), sq-trt's
PTX-cache hit time, PTX size and register-free facts from the PTX text.

Usage: ``python bench/bench_plugin.py [--out bench/results/plugin_aot.json] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

CASES = {
    # name: (kernel, dtype, constexprs); BLOCK/SINGLE_PASS as launch_config picks them.
    "per_token/fp16/K=576 (single pass)": ("per_token_quant_kernel", "fp16", {"BLOCK": 1024, "SINGLE_PASS": True}),
    "per_token/bf16/K=4096 (single pass)": ("per_token_quant_kernel", "bf16", {"BLOCK": 4096, "SINGLE_PASS": True}),
    "per_token/fp16/dynamic K (streaming)": ("per_token_quant_kernel", "fp16", {"BLOCK": 2048, "SINGLE_PASS": False}),
    "rmsnorm/fp16/K=576 (single pass)": (
        "rmsnorm_per_token_quant_kernel", "fp16", {"EPS": 1e-5, "BLOCK": 1024, "SINGLE_PASS": True},
    ),
    "layernorm/fp16/K=768 (single pass)": (
        "layernorm_per_token_quant_kernel", "fp16", {"EPS": 1e-5, "BLOCK": 1024, "SINGLE_PASS": True},
    ),
    "rmsnorm/bf16/dynamic K (streaming)": (
        "rmsnorm_per_token_quant_kernel", "bf16", {"EPS": 1e-5, "BLOCK": 2048, "SINGLE_PASS": False},
    ),
}  # fmt: skip


def _signature(kernel: str, dtype: str) -> dict[str, str]:
    sig = {"x_ptr": f"*{dtype}"}
    if kernel.startswith(("rmsnorm", "layernorm")):
        sig["w_ptr"] = f"*{dtype}"
    if kernel.startswith("layernorm"):
        sig["b_ptr"] = f"*{dtype}"
    sig.update({"n_rows": "i32", "n_cols": "i32", "xq_ptr": "*i8", "amax_ptr": f"*{dtype}"})
    return sig


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "plugin_aot.json")
    parser.add_argument("--repeat", type=int, default=3, help="cold compiles per case and arch (median kept)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        os.environ["SQ_TRT_CACHE"] = str(Path(scratch) / "sq")
        import triton

        from sq_trt.plugins import aot, kernels

        rows = []
        for case, (kernel_name, dtype, consts) in CASES.items():
            kernel = getattr(kernels, kernel_name)
            num_warps = kernels.launch_config(consts["BLOCK"] if consts["SINGLE_PASS"] else None)[2]
            for arch in aot.SUPPORTED_ARCHS:
                cold = []
                for i in range(args.repeat):
                    # A fresh Triton cache per run: every compile goes through LLVM and ptxas.
                    os.environ["TRITON_CACHE_DIR"] = str(
                        Path(scratch) / f"triton-{case}-{arch}-{i}".replace("/", "_")
                    )
                    start = time.perf_counter()
                    name, ptx, meta = aot.compile_ptx(
                        kernel, _signature(kernel_name, dtype), {**consts, "USE_LIBDEVICE": True}, arch,
                        num_warps=num_warps, use_cache=(i == args.repeat - 1),
                    )  # fmt: skip
                    cold.append(time.perf_counter() - start)
                start = time.perf_counter()
                _, cached_ptx, cached = aot.compile_ptx(
                    kernel,
                    _signature(kernel_name, dtype),
                    {**consts, "USE_LIBDEVICE": True},
                    arch,
                    num_warps=num_warps,
                )
                hit_s = time.perf_counter() - start
                assert cached.cache_hit and cached_ptx == ptx
                rows.append(
                    {
                        "case": case,
                        "kernel": name,
                        "arch": f"sm_{arch}",
                        "num_warps": meta.num_warps,
                        "shared_mem_bytes": meta.shared_mem,
                        "ptx_bytes": len(ptx.encode()),
                        "ptx_lines": ptx.count("\n"),
                        "cold_compile_s_median": round(statistics.median(cold), 3),
                        "cold_compile_s_all": [round(t, 3) for t in cold],
                        "cache_hit_ms": round(hit_s * 1000, 2),
                        "stripped_params": meta.stripped_params,
                    }
                )
                print(f"{case:40s} sm_{arch}: {len(ptx):6d} B PTX, cold {statistics.median(cold):.2f} s, "
                      f"cached {hit_s * 1000:.1f} ms", flush=True)  # fmt: skip

    result = {
        "benchmark": "plugin AOT compile (Triton -> PTX)",
        "command": "python bench/bench_plugin.py " + " ".join(sys.argv[1:]),
        "triton": triton.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, no GPU",
        "ptx_isa": aot.DEFAULT_PTX_VERSION / 10,
        "note": "timings on a shared 2-core CPU machine; contention inflates them",
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from sq_trt.artifacts import atomic_write_text

    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
