"""The GEMM plugins' AOT PTX on a GPU: bit-exact vs the reference, and timed vs cuBLAS. One ready script.

Two steps, so that the GPU runs exactly the PTX a TensorRT engine would embed, compiled here:

1. ``--export DIR [--arch sm_90]`` (any machine with Triton, no GPU): writes, for both GEMM plugins and
   every tactic, the aligned variant's PTX from :func:`sq_trt.plugins.gemm.compile_variant` (the function
   the plugins' ``aot_impl`` calls), plus ``ptx.json`` (kernel name, tile, warps, shared memory, hints).
2. ``--check DIR [--out FILE]`` (a GPU host with torch, ``cuda-bindings``; no TensorRT, no Triton needed):
   loads each PTX with ``cuModuleLoadData`` and launches it with ``cuLaunchKernel`` in TensorRT's argument
   order (:mod:`sq_trt.plugins.ptx_run`), checks the output bit-exact against
   ``sq_trt.quant.reference`` (int64 accumulation on the CPU) at decode and prefill shapes, then times each
   tactic at decode (M = 1, 8) and prefill (M = 2048) against ``torch.matmul`` in fp16 and
   ``torch._int_mm`` (cuBLASLt int8, int32 out) on the same shape, with CUDA events.

Without a GPU, ``--check`` prints why and exits 0. Example (the device run of docs/GPU_HOST.md)::

    python bench/gpu_ptx_check.py --export build/ptx-sm90 --arch sm_90           # here
    python bench/gpu_ptx_check.py --check build/ptx-sm90 --out "$OUT/gpu_ptx_check.json"   # on the GPU
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PLUGINS = {"W8A8Gemm": "w8a8_gemm_kernel", "QuantW8A8Gemm": "quant_w8a8_gemm_kernel"}
# (M, N, K): decode and prefill token counts on a 576-wide model (SmolLM2-135M: q/o 576, mlp 1536) and
# a 4096-wide one; exactness on the smaller ones (the int64 reference runs on the CPU).
CHECK_SHAPES = ((1, 576, 576), (8, 1536, 576), (77, 576, 1536), (300, 1536, 576))
TIME_SHAPES = ((1, 4096, 4096), (8, 4096, 4096), (2048, 4096, 4096), (2048, 1536, 576))


def export(out: Path, arch: str) -> int:
    """Compile every aligned GEMM variant for ``arch`` and write the PTX files and ``ptx.json``."""
    _import_plugins()
    from sq_trt.plugins import gemm

    out.mkdir(parents=True, exist_ok=True)
    records = []
    for plugin, kernel in PLUGINS.items():
        for tactic in range(1, len(gemm.TILE_CONFIGS) + 1):
            name, ptx, meta = gemm.compile_variant(kernel, tactic, arch, dtype="fp16")
            tile = gemm.tile_config(tactic)
            path = out / f"{plugin}-sm{meta.arch}-tactic{tactic}.ptx"
            path.write_text(ptx)
            records.append(
                {"plugin": plugin, "tactic": tactic, "file": path.name, "kernel": name, "tile": tile.label(),
                 "block_m": tile.block_m, "block_n": tile.block_n, "num_warps": meta.num_warps,
                 "shared_mem": meta.shared_mem, "divisibility": meta.divisibility, "arch": meta.arch,
                 "triton": meta.triton_version}
            )  # fmt: skip
    (out / "ptx.json").write_text(json.dumps(records, indent=2) + "\n")
    print(f"wrote {len(records)} PTX files to {out}")
    return 0


def _import_plugins() -> None:
    """Make ``sq_trt.plugins`` importable from a plain checkout (the device copies the tree, installs nothing).

    ``pyproject.toml`` maps ``plugins/`` to ``sq_trt.plugins`` only in an installed package.
    """
    import importlib.util

    sys.path.insert(0, str(REPO))
    try:
        import sq_trt.plugins  # noqa: F401
    except ModuleNotFoundError:
        init = REPO / "plugins" / "__init__.py"
        spec = importlib.util.spec_from_file_location(
            "sq_trt.plugins", init, submodule_search_locations=[str(init.parent)]
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["sq_trt.plugins"] = module
        spec.loader.exec_module(module)


def _inputs(
    plugin: str, m: int, n: int, k: int, seed: int, *, reference_too: bool = True
) -> tuple[list[Any], Any]:
    """CUDA tensors in the plugin's input order, and the reference output (on the CPU; None if not asked)."""
    import torch

    from sq_trt.quant import reference

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g).mul_(torch.rand(m, 1, generator=g) * 4).half()
    w_q, w_scale = reference.quantize_weight_per_channel(torch.randn(n, k, generator=g) * 0.05)
    bias = torch.randn(n, generator=g)
    expected = None
    if plugin == "W8A8Gemm":
        x_q, amax = reference.quantize_per_token(x.float())
        amax = amax.half()
        if reference_too:
            expected = reference.w8a8_gemm(x_q, amax, w_q, w_scale, bias, out_dtype=torch.float16)
        host = [x_q, amax, w_q, w_scale.float(), bias]
    else:
        smooth = torch.rand(k, generator=g) + 0.5
        if reference_too:
            expected = reference.quant_w8a8_gemm(x, w_q, w_scale, bias, smooth=smooth)
        host = [x, smooth, w_q, w_scale.float(), bias]
    return [t.contiguous().cuda() for t in host], expected


def _time(fn: Any, repeat: int = 50) -> float:
    import torch

    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeat):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeat / 1e3


def _baselines(m: int, n: int, k: int) -> dict[str, float | None]:
    import torch

    a, b = torch.randn(m, k, device="cuda").half(), torch.randn(n, k, device="cuda").half()
    times: dict[str, float | None] = {"torch.matmul fp16": _time(lambda: torch.matmul(a, b.T))}
    qa = torch.randint(-127, 128, (m, k), device="cuda", dtype=torch.int8)
    qb = torch.randint(-127, 128, (k, n), device="cuda", dtype=torch.int8)
    try:  # cuBLASLt's int8 GEMM needs M > 16 and sizes that are multiples of 8
        times["torch._int_mm int8"] = _time(lambda: torch._int_mm(qa, qb))
    except RuntimeError:
        times["torch._int_mm int8"] = None
    return times


def _run_variant(folder: Path, rec: dict[str, Any]) -> dict[str, Any]:
    """Load one exported PTX, check it bit-exact at CHECK_SHAPES and time it at TIME_SHAPES."""
    import torch

    from sq_trt.plugins.ptx_run import PtxKernel, run_gemm

    kernel = PtxKernel.load((folder / rec["file"]).read_text(), rec["kernel"],
                            num_warps=rec["num_warps"], shared_mem=rec["shared_mem"])  # fmt: skip
    tile = argparse.Namespace(block_m=rec["block_m"], block_n=rec["block_n"])
    row: dict[str, Any] = {"plugin": rec["plugin"], "tactic": rec["tactic"], "tile": rec["tile"]}
    row["exact"], row["seconds"] = {}, {}
    for m, n, k in CHECK_SHAPES:
        tensors, expected = _inputs(rec["plugin"], m, n, k, seed=m + n + k)
        y = torch.empty(m, n, device="cuda", dtype=torch.float16)
        run_gemm(kernel, tile, tensors, y, m, n, k)
        torch.cuda.synchronize()
        row["exact"][f"{m}x{n}x{k}"] = bool(torch.equal(y.cpu(), expected))
    for m, n, k in TIME_SHAPES:
        tensors, _ = _inputs(rec["plugin"], m, n, k, seed=1, reference_too=False)
        y = torch.empty(m, n, device="cuda", dtype=torch.float16)
        row["seconds"][f"{m}x{n}x{k}"] = _time(lambda: run_gemm(kernel, tile, tensors, y, m, n, k))  # noqa: B023
    return row


def check(folder: Path, out: Path | None) -> int:
    """Run every exported variant on the GPU: exactness first, then timings."""
    try:
        import torch
    except ImportError:
        print("torch is not installed; nothing to run")
        return 0
    if not torch.cuda.is_available():
        print("no CUDA GPU visible; the AOT PTX check needs one (see docs/GPU_HOST.md)")
        return 0
    _import_plugins()
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "variants": [],
    }
    for rec in json.loads((folder / "ptx.json").read_text()):
        row = _run_variant(folder, rec)
        results["variants"].append(row)
        timings = {s: f"{t * 1e6:.1f} us" for s, t in row["seconds"].items()}
        print(rec["plugin"], rec["tactic"], rec["tile"], row["exact"], timings, flush=True)
    results["baselines"] = {f"{m}x{n}x{k}": _baselines(m, n, k) for m, n, k in TIME_SHAPES}
    print(json.dumps(results["baselines"], indent=2))
    inexact = [
        (r["plugin"], r["tactic"], s) for r in results["variants"] for s, ok in r["exact"].items() if not ok
    ]
    results["all_exact"] = not inexact
    results["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
    print("bit-exact: all" if not inexact else f"NOT bit-exact: {inexact}")
    return 0 if not inexact else 1


def main(argv: list[str] | None = None) -> int:
    """``--export DIR`` here, ``--check DIR`` on the GPU."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--export", type=Path, help="write the AOT PTX of every GEMM variant here (no GPU needed)"
    )
    mode.add_argument("--check", type=Path, help="run the PTX exported to this folder on the GPU")
    parser.add_argument("--arch", default="sm_90", help="GPU architecture for --export (default sm_90)")
    parser.add_argument("--out", type=Path, help="--check: write the results as JSON here")
    args = parser.parse_args(argv)
    return export(args.export, args.arch) if args.export else check(args.check, args.out)


if __name__ == "__main__":
    sys.exit(main())
