"""Benchmark (GPU host): the fused W8A8 GEMM vs FP16 vs plugin+DQ vs per-tensor INT8, one layer and whole engines.

Two parts, both at batch x seq in {1x128, 8x512, 32x2048}:

* ``layer``: the seven GEMMs of one decoder layer (q/k/v, o, gate/up, down), each encoding as the
  engine would run it, timed with CUDA events on torch tensors:
    - ``fused-gemm``: the encoding the export emits: PerTokenQuant once per norm-fed input group
      (q/k/v, gate/up), then W8A8Gemm per linear; QuantW8A8Gemm (quantizing in registers) on o_proj and
      down_proj. On a GPU the GEMMs run the exact AOT PTX a TensorRT engine embeds
      (``gemm.compile_variant``, the aligned variant where the shape allows), through the CUDA driver
      API (:mod:`sq_trt.plugins.ptx_run`), each linear with the fastest tactic at that shape, as
      TensorRT's autotuner would pick; not Triton's JIT, which specializes on alignment by itself;
    - ``fp16``: cuBLAS FP16 GEMMs (the FP16 engine);
    - ``plugin+dq``: PerTokenQuant, then dequantize to FP16 and an FP16 GEMM (the ``plugin`` encoding if
      TensorRT declines the INT8 fusion);
    - ``per-tensor-qdq``: static per-tensor quantize + cuBLASLt int8 GEMM (``torch._int_mm``) + rescale.
  tokens/s = batch * seq / (time of the seven GEMMs + their quantization). Goal (issue 13): fused-gemm
  >= 1.6x fp16 at >= 2048 tokens on H100/H200.
* ``engine``: whole-model TensorRT engines given with ``--engine ENCODING=PATH`` (built by ``sq-trt build``
  from each encoding's export), timed with ``execute_async_v3``; skipped when none are given.

Runs unchanged in NVIDIA's TensorRT container; with no GPU it prints why and exits 0. ``--interpret`` runs
the ``layer`` part's Triton kernels under ``TRITON_INTERPRET=1`` on a tiny shape, only to prove the
script works end to end on a CPU: those timings are not GPU figures and are labelled so.

Usage: ``python bench/bench_gemm_plugin.py [--hidden 576 --intermediate 1536 --kv-dim 192]
[--engine fused-gemm=engines/x/fused.plan ...] [--out bench/results/gemm_plugin.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SHAPES = ((1, 128), (8, 512), (32, 2048))
GOAL_RATIO, GOAL_TOKENS = 1.6, 2048


def _layer_linears(hidden: int, intermediate: int, kv_dim: int) -> dict[str, tuple[str, int, int]]:
    """name -> (input group, N, K): linears in one group share one quantized input."""
    return {
        "q": ("attn_in", hidden, hidden), "k": ("attn_in", kv_dim, hidden), "v": ("attn_in", kv_dim, hidden),
        "o": ("attn_out", hidden, hidden),
        "gate": ("mlp_in", intermediate, hidden), "up": ("mlp_in", intermediate, hidden),
        "down": ("mlp_out", hidden, intermediate),
    }  # fmt: skip


def _time(fn: Callable[[], Any], device: str, repeat: int) -> float:
    """Median seconds of ``fn`` (CUDA events on a GPU, wall clock under the interpreter)."""
    import torch

    fn()  # warm-up: compiles the Triton kernels, picks cuBLAS algorithms
    samples = []
    for _ in range(repeat):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            samples.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
    return sorted(samples)[len(samples) // 2]


def _encodings(
    linears: dict[str, tuple[str, int, int]], tokens: int, device: str
) -> dict[str, Callable[[], Any]]:
    import torch

    from sq_trt.plugins import launch
    from sq_trt.quant.reference import quantize_weight_per_channel

    gen = torch.Generator().manual_seed(0)
    dims = {group: k for group, _, k in linears.values()}
    xs = {
        g: (torch.randn(tokens, k, generator=gen) * 2).to(torch.float16).to(device) for g, k in dims.items()
    }
    weights = {}
    for name, (_, n, k) in linears.items():
        w_q, w_scale = quantize_weight_per_channel(torch.randn(n, k, generator=gen) * 0.05)
        weights[name] = (
            w_q.to(device),
            w_scale.to(device),
            (w_q.float() * w_scale[:, None]).half().to(device),
        )

    def fused_gemm() -> None:
        codes = {g: launch.per_token_quant(x) for g, x in xs.items()}
        for name, (group, _, _) in linears.items():
            launch.w8a8_gemm(*codes[group], weights[name][0], weights[name][1])

    aot_exact: bool | None = None
    if device == "cuda":  # the engine's PTX; the interpreter can only run the Triton source
        fused_gemm, aot_exact = _aot_fused_gemm(linears, xs, weights, tokens)

    def fp16() -> None:
        for name, (group, _, _) in linears.items():
            torch.matmul(xs[group], weights[name][2].T)

    def plugin_dq() -> None:
        codes = {g: launch.per_token_quant(x) for g, x in xs.items()}
        for name, (group, _, _) in linears.items():
            x_q, amax = codes[group]
            torch.matmul(x_q.half() * (amax / 127), weights[name][2].T)

    def per_tensor_qdq() -> None:
        for name, (group, _, _) in linears.items():
            x_q = torch.clamp(torch.round(xs[group] * 16.0), -128, 127).to(torch.int8)
            acc = torch._int_mm(x_q, weights[name][0].T)
            (acc.float() * (weights[name][1] / 16.0)).half()

    def check() -> bool:
        # The timed kernels compute the right thing: one linear against the CPU reference, exactly.
        from sq_trt.quant.reference import w8a8_gemm

        name, (group, _, _) = next(iter(linears.items()))
        x_q, amax = launch.per_token_quant(xs[group])
        y = launch.w8a8_gemm(x_q, amax, weights[name][0], weights[name][1])
        ref = w8a8_gemm(x_q.cpu(), amax.cpu(), weights[name][0].cpu(), weights[name][1].cpu())
        return bool(torch.equal(y.cpu(), ref))

    runs: dict[str, Callable[[], Any]] = {
        "fused-gemm": fused_gemm,
        "check": check if aot_exact is None else (lambda: aot_exact),
    }
    if device == "cuda":  # the interpreter smoke run times the Triton path only
        runs.update({"fp16": fp16, "plugin+dq": plugin_dq})
        if tokens > 16 and tokens % 8 == 0:  # torch._int_mm's constraints
            runs["per-tensor-qdq"] = per_tensor_qdq
    return runs


# Linears whose input comes from a norm (quantized once by the fused norm+quant plugin, shared by the
# group) vs the others (o_proj, down_proj), which the export gives QuantW8A8Gemm.
NORM_FED = ("attn_in", "mlp_in")


def _aot_fused_gemm(
    linears: dict[str, tuple[str, int, int]], xs: dict[str, Any], weights: dict[str, Any], tokens: int
) -> tuple[Callable[[], None], bool]:
    """The fused-gemm layer on the AOT PTX, each linear at its fastest tactic (TensorRT's choice at opt).

    Returns:
        The timed function, and whether every linear's first rows equal the CPU reference exactly.
    """
    import torch

    from sq_trt.plugins import gemm, launch
    from sq_trt.plugins.ptx_run import PtxKernel, run_gemm

    major, minor = torch.cuda.get_device_capability()
    codes = {g: launch.per_token_quant(x) for g, x in xs.items()}
    calls: list[Callable[[], None]] = []
    exact: list[bool] = []
    for name, (group, n, k) in linears.items():
        plain = group in NORM_FED
        kernel_name = "w8a8_gemm_kernel" if plain else "quant_w8a8_gemm_kernel"
        inputs = [*(codes[group] if plain else (xs[group], torch.ones(k, device="cuda"))), *weights[name][:2]]
        inputs.append(torch.zeros(n, device="cuda"))  # bias
        y = torch.empty(tokens, n, dtype=torch.float16, device="cuda")
        best: tuple[float, Callable[[], None]] | None = None
        for tactic in gemm.tactics_for(n, k):
            alignment = gemm.alignment_variant(n, k, "fp16")
            kname, ptx, meta = gemm.compile_variant(
                kernel_name, tactic, f"{major}{minor}", alignment=alignment, shape=(n, k)
            )
            kernel = PtxKernel.load(ptx, kname, num_warps=meta.num_warps, shared_mem=meta.shared_mem)
            tile = gemm.tile_config(tactic)
            call = lambda kernel=kernel, tile=tile, inputs=inputs, y=y, n=n, k=k: run_gemm(
                kernel, tile, inputs, y, tokens, n, k, torch.cuda.current_stream().cuda_stream
            )
            seconds = _time(call, "cuda", 5)
            if best is None or seconds < best[0]:
                best = (seconds, call)
        assert best is not None
        calls.append(best[1])
        exact.append(_rows_exact(best[1], y, inputs, plain))

    def fused_gemm() -> None:
        for g in NORM_FED:
            launch.per_token_quant(xs[g])
        for call in calls:
            call()

    return fused_gemm, all(exact)


def _rows_exact(call: Callable[[], None], y: Any, inputs: list[Any], plain: bool, rows: int = 256) -> bool:
    """Run once and compare the first ``rows`` outputs with the reference (rows are independent)."""
    import torch

    from sq_trt.quant import reference

    call()
    torch.cuda.synchronize()
    host = [t.cpu() for t in inputs]
    if plain:
        x_q, amax, w_q, w_scale, bias = host
        expected = reference.w8a8_gemm(x_q[:rows], amax[:rows], w_q, w_scale, bias)
    else:
        x, smooth, w_q, w_scale, bias = host
        expected = reference.quant_w8a8_gemm(x[:rows], w_q, w_scale, bias, smooth=smooth)
    return bool(torch.equal(y[:rows].cpu(), expected))


def bench_layer(args: argparse.Namespace, device: str) -> list[dict[str, Any]]:
    """tokens/s of one decoder layer's GEMMs per encoding and shape."""
    linears = _layer_linears(args.hidden, args.intermediate, args.kv_dim)
    shapes = ((1, 4),) if args.interpret else SHAPES
    rows = []
    for batch, seq in shapes:
        tokens = batch * seq
        runs = _encodings(linears, tokens, device)
        exact = runs.pop("check")()
        times = {enc: _time(fn, device, args.repeat) for enc, fn in runs.items()}
        row: dict[str, Any] = {"batch": batch, "seq": seq, "tokens": tokens, "fused_gemm_exact": exact}
        row["tokens_per_s"] = {enc: tokens / t for enc, t in times.items()}
        if "fp16" in times:
            row["speedup_vs_fp16"] = {enc: times["fp16"] / t for enc, t in times.items()}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def bench_engines(engines: dict[str, Path], repeat: int) -> list[dict[str, Any]]:
    """tokens/s of whole-model TensorRT engines (input ``input_ids`` [batch, seq]) per encoding and shape."""
    import tensorrt as trt
    import torch

    rows = []
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    if any("fused-gemm" in enc or "plugin" in enc for enc in engines):
        from sq_trt.plugins import register

        register(trt)  # harmless for AOT plans; needed only if a plan was built with JIT plugins
    for enc, path in engines.items():
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        for batch, seq in SHAPES:
            buffers = {}
            for name in names:
                if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                    context.set_input_shape(name, (batch, seq))
                    buffers[name] = torch.ones((batch, seq), dtype=torch.int64, device="cuda")
            for name in names:
                if name not in buffers:
                    shape = tuple(context.get_tensor_shape(name))
                    dtype = torch.float16 if engine.get_tensor_dtype(name) == trt.float16 else torch.float32
                    buffers[name] = torch.empty(shape, dtype=dtype, device="cuda")
            for name, tensor in buffers.items():
                context.set_tensor_address(name, tensor.data_ptr())
            stream = torch.cuda.current_stream().cuda_stream
            seconds = _time(lambda ctx=context, s=stream: ctx.execute_async_v3(s), "cuda", repeat)
            row = {"encoding": enc, "batch": batch, "seq": seq, "tokens_per_s": batch * seq / seconds}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def _goal(layer: list[dict[str, Any]]) -> dict[str, Any]:
    big = [r for r in layer if r["tokens"] >= GOAL_TOKENS and "speedup_vs_fp16" in r]
    ratios = [r["speedup_vs_fp16"]["fused-gemm"] for r in big]
    return {"goal": f"fused-gemm >= {GOAL_RATIO}x fp16 at >= {GOAL_TOKENS} tokens", "ratios": ratios,
            "met": bool(ratios) and min(ratios) >= GOAL_RATIO}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=576, help="hidden size (default: SmolLM2-135M)")
    parser.add_argument("--intermediate", type=int, default=1536, help="MLP size")
    parser.add_argument("--kv-dim", type=int, default=192, help="k/v projection width (kv heads x head dim)")
    parser.add_argument(
        "--engine", action="append", default=[], metavar="ENCODING=PLAN", help="whole-model engine"
    )
    parser.add_argument("--repeat", type=int, default=20, help="timed runs per case (median kept)")
    parser.add_argument("--interpret", action="store_true", help="CPU smoke run under TRITON_INTERPRET=1")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gemm_plugin.json")
    args = parser.parse_args()
    if args.interpret:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
        args.repeat = 1
    import torch

    if not args.interpret and not torch.cuda.is_available():
        print(
            "bench_gemm_plugin: no CUDA GPU visible; nothing measured (run it on a GPU host, or --interpret)"
        )
        return 0
    device = "cuda" if not args.interpret else "cpu"
    result: dict[str, Any] = {
        "kind": "cpu-interpreter smoke run: NOT GPU figures" if args.interpret else "gpu",
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine(),
        "layer_dims": {"hidden": args.hidden, "intermediate": args.intermediate, "kv_dim": args.kv_dim},
        "python": sys.version.split()[0], "torch": torch.__version__,
    }  # fmt: skip
    result["layer"] = bench_layer(args, device)
    if device == "cuda":
        result["goal"] = _goal(result["layer"])
        engines = dict(item.split("=", 1) for item in args.engine)
        result["engine"] = (
            bench_engines({k: Path(v) for k, v in engines.items()}, args.repeat) if engines else []
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(args.out)  # atomic: a reader never sees half a result
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
