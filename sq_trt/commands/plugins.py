"""`sq-trt plugins`: list the TensorRT plugins, write and audit their kernels' PTX, no GPU needed."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "List the sq_trt TensorRT plugins, write or audit the PTX of their AOT variants (no GPU needed)."
DESCRIPTION = (
    HELP + "\n\n  sq-trt plugins list\n"
    "      every plugin: inputs, outputs, attributes, supported GPU architectures, kernel variants\n"
    "  sq-trt plugins ptx W8A8Gemm --arch sm_90 --out ptx/\n"
    "      one .ptx file per AOT variant (per autotune tactic for the GEMMs, per layout for the\n"
    "      per-token quantizers), compiled exactly as the plugin compiles it inside a TensorRT build;\n"
    "      grep them for `mma.sync ... s32.s8.s8.s32` / `wgmma ... s8` to see the integer tensor cores.\n"
    "  sq-trt plugins audit [--arch sm_90 ...] [--plugin W8A8Gemm ...]\n"
    "      every plugin, architecture and variant: integer MMA, async/vector operand loads and no\n"
    "      byte-wise loads (GEMMs), 0 spilled bytes and <= 48 KiB shared memory (ptxas -v); prints a\n"
    "      table, exits 1 if any variant breaks a rule.\n"
    "\nNeeds the `kernels` extra (triton) for `ptx` and `audit`. Blackwell (sm_100/sm_120) is refused for now."
)


_ALIGNMENT_HELP = (
    "the GEMMs' variant: aligned (K, N multiples of 16 / 8, every real model) or the unaligned fallback "
    "(byte-wise loads; fails the audit)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``list`` and ``ptx NAME --arch --out [--dtype] [--hidden]``."""
    sub = parser.add_subparsers(dest="plugins_command", metavar="<list|ptx|audit>", required=True)
    sub.add_parser(
        "list",
        help="every plugin with its inputs, outputs, attributes and architectures",
        description="Print every sq_trt plugin (TensorRT plugin namespace and ONNX domain `sq_trt`): its inputs, "
        "outputs and attributes as the ONNX node carries them, its Triton kernel and AOT variants (autotune "
        "tactics), and the GPU architectures its PTX is compiled for.",
    )
    ptx = sub.add_parser(
        "ptx",
        help="write the PTX of each AOT variant of one plugin",
        description="Compile each AOT variant of a plugin's Triton kernel to PTX for one GPU architecture "
        "and write one file per variant (<plugin>-<arch>-<variant>.ptx) plus variants.json.",
    )
    ptx.add_argument("name", help="plugin name, e.g. W8A8Gemm (see `sq-trt plugins list`)")
    ptx.add_argument("--arch", required=True, help="GPU architecture: sm_80, sm_86, sm_89 or sm_90")
    ptx.add_argument("--out", required=True, type=Path, help="directory to write the .ptx files into")
    ptx.add_argument(
        "--dtype", default="fp16", choices=("fp16", "bf16", "fp32"), help="activation dtype (default fp16)"
    )
    ptx.add_argument(
        "--hidden", type=int, default=4096, help="hidden size of the per-token plugins' single-pass variant"
    )
    ptx.add_argument("--alignment", default="aligned", choices=("aligned", "unaligned"), help=_ALIGNMENT_HELP)
    audit = sub.add_parser(
        "audit",
        help="check every AOT variant's PTX: integer MMA, async loads, no spills, shared memory",
        description="Compile every AOT variant of the plugins for each architecture, as a TensorRT build "
        "would, and check its PTX and `ptxas -v` report (NVIDIA's ptxas from the nvidia-cuda-nvcc-cu12 "
        "wheel, else Triton's): the GEMMs use integer MMA and load their int8 tiles with cp.async / TMA / "
        "vector loads and never one byte at a time; no variant spills registers or needs more than 48 KiB "
        "of shared memory. Prints a Markdown table; exits 1 when any variant breaks a rule.",
    )
    audit.add_argument(
        "--arch", action="append", help="GPU architecture, repeatable (default: sm_80, sm_86, sm_89, sm_90)"
    )
    audit.add_argument("--plugin", action="append", help="plugin name, repeatable (default: every plugin)")
    audit.add_argument(
        "--dtype", default="fp16", choices=("fp16", "bf16", "fp32"), help="activation dtype (default fp16)"
    )
    audit.add_argument(
        "--alignment", default="aligned", choices=("aligned", "unaligned"), help=_ALIGNMENT_HELP
    )
    audit.add_argument("--json", type=Path, help="also write the rows as JSON to this file")


def _list() -> int:
    from sq_trt import plugin_spec
    from sq_trt.plugins import catalog
    from sq_trt.plugins.aot import SUPPORTED_ARCHS

    archs = ", ".join(f"sm_{a}" for a in SUPPORTED_ARCHS)
    for info in catalog.PLUGINS:
        print(f"{plugin_spec.PLUGIN_NAMESPACE}::{info.name} (ONNX domain {plugin_spec.ONNX_DOMAIN})")
        print(f"  {info.summary}")
        print(f"  inputs:     {'; '.join(info.inputs)}")
        print(f"  outputs:    {'; '.join(info.outputs)}")
        print(f"  attributes: {'; '.join(info.attributes) or '-'}")
        print(f"  kernel:     {info.kernel} ({catalog.variant_summary(info)})")
        print(f"  archs:      {archs} (AOT PTX, ISA 8.4; Blackwell not yet)")
    return 0


def _ptx(args: argparse.Namespace) -> int:
    import json

    from sq_trt.artifacts import atomic_write_text
    from sq_trt.errors import ConfigError
    from sq_trt.plugins import catalog
    from sq_trt.plugins.aot import normalize_arch

    if args.hidden < 1:
        raise ConfigError(f"--hidden {args.hidden} is not a hidden size; expected a positive integer")
    info = catalog.plugin_info(args.name)
    arch = normalize_arch(args.arch)
    variants = catalog.compile_variants(
        info.name, arch, dtype=args.dtype, hidden=args.hidden, alignment=args.alignment
    )
    records = []
    for variant in variants:
        path = Path(args.out) / f"{info.name}-sm{arch}-{args.dtype}-{variant.label}.ptx"
        atomic_write_text(path, variant.ptx)
        mma = sorted(set(catalog.mma_instructions(variant.ptx)))
        records.append(
            {"variant": variant.label, "file": path.name, "kernel": variant.kernel_name, "mma": mma}
        )
        print(f"{path}  {', '.join(mma) or 'no MMA'}")
    index = {"plugin": info.name, "arch": f"sm_{arch}", "dtype": args.dtype, "variants": records}
    atomic_write_text(Path(args.out) / "variants.json", json.dumps(index, indent=2) + "\n")
    return 0


def _audit(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from sq_trt.artifacts import atomic_write_text
    from sq_trt.plugins import audit, catalog
    from sq_trt.plugins.aot import SUPPORTED_ARCHS, normalize_arch

    # Validate every name before the first (slow) compile.
    archs = [normalize_arch(a) for a in (args.arch or SUPPORTED_ARCHS)]
    plugins = [catalog.plugin_info(p).name for p in (args.plugin or [p.name for p in catalog.PLUGINS])]
    rows = audit.audit(plugins, archs, dtype=args.dtype, alignment=args.alignment)
    print(f"ptxas: {audit.find_ptxas()}")
    print(audit.format_table(rows))
    if args.json is not None:
        records = [{**asdict(r), "ok": r.ok} for r in rows]
        atomic_write_text(args.json, json.dumps(records, indent=2) + "\n")
    failed = [r for r in rows if not r.ok]
    if failed:
        print(f"audit FAILED: {len(failed)} of {len(rows)} variants break a rule")
        return 1
    print(f"audit passed: {len(rows)} variants")
    return 0


def run(args: argparse.Namespace) -> int:
    """Dispatch ``list`` / ``ptx`` / ``audit``."""
    handlers = {"list": lambda _: _list(), "ptx": _ptx, "audit": _audit}
    return handlers[args.plugins_command](args)
