"""Benchmark of the searches' exact INT8 GEMM, both paths, at the demo's shapes (not a test).

The alpha search and the hybrid plan spend their time in ``x_q @ w_q.T`` of int8 operands
(:mod:`sq_trt.quant.intgemm`). This times, at SmolLM2-135M's search shapes (512 sampled
tokens; q/k/v, o, gate/up and down), the ``float32`` path (K-chunks <= 1024, float64 sum),
the ``int_mm`` path (``torch._int_mm``) and a plain float32 GEMM of the same shapes, checks the
two exact paths agree bit for bit, and records the CPU model and flags with every figure.

    python bench/bench_int8_gemm.py [--repeats 5] [--result bench/results/int8_gemm.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# (name, K, N) of the demo's groups: the search runs each group's linears on its sampled input.
SHAPES = [("qkv", 576, 960), ("o_proj", 576, 576), ("gate_up", 576, 3072), ("down_proj", 1536, 576)]
TOKENS = 512  # search.samples (4) x search.tokens_per_sample (128)


def cpu_facts() -> dict[str, Any]:
    """CPU model, core count and the ISA flags that decide the integer GEMM's speed."""
    from sq_trt.quant.intgemm import cpu_flags

    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = cpu_flags()
    isa = sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "sse4")))
    return {"model": model, "cpus": os.cpu_count(), "machine": platform.machine(), "isa_flags": isa}


def _best(fn: Any, repeats: int) -> tuple[float, float]:
    """Best wall and its CPU seconds over ``repeats`` calls (after one warm-up)."""
    fn()
    best = (float("inf"), 0.0)
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        best = min(best, (wall, cpu))
    return best


def bench(repeats: int) -> dict[str, Any]:
    import torch

    from sq_trt.quant.intgemm import gemm_path, int8_matmul

    generator = torch.Generator().manual_seed(0)
    rows = []
    for name, k, n in SHAPES:
        x_q = torch.randint(-128, 128, (TOKENS, k), dtype=torch.int8, generator=generator)
        w_q = torch.randint(-127, 128, (n, k), dtype=torch.int8, generator=generator)
        x_f, w_f = x_q.float(), w_q.float()
        same = torch.equal(int8_matmul(x_q, w_q, path="float32"), int8_matmul(x_q, w_q, path="int_mm"))
        row: dict[str, Any] = {"shape": name, "tokens": TOKENS, "k": k, "n": n, "paths_bit_identical": same}
        for label, fn in {
            "float32_chunks": lambda x_q=x_q, w_q=w_q: int8_matmul(x_q, w_q, path="float32"),
            "int_mm": lambda x_q=x_q, w_q=w_q: int8_matmul(x_q, w_q, path="int_mm"),
            "plain_float32_gemm": lambda x_f=x_f, w_f=w_f: x_f @ w_f.t(),
        }.items():
            wall, cpu = _best(fn, repeats)
            row[f"{label}_ms"] = round(1e3 * wall, 3)
            row[f"{label}_cpu_ms"] = round(1e3 * cpu, 3)
        row["int_mm_over_float32_chunks"] = round(row["int_mm_ms"] / row["float32_chunks_ms"], 2)
        rows.append(row)
        print(json.dumps(row))
    return {
        "cpu": cpu_facts(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "default_path_here": gemm_path(),
        "loadavg_at_end": os.getloadavg(),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--result", type=Path, default=ROOT / "bench" / "results" / "int8_gemm.json")
    args = parser.parse_args()
    payload = bench(args.repeats)
    args.result.parent.mkdir(parents=True, exist_ok=True)
    args.result.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps({k: v for k, v in payload.items() if k != "rows"}, indent=2))


if __name__ == "__main__":
    main()
