"""`sq-trt plugins`: list the TensorRT plugins and write their kernels' PTX, no GPU needed."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "List the sq_trt TensorRT plugins, or write the PTX of each AOT variant of one (no GPU needed)."
DESCRIPTION = (
    HELP + "\n\n  sq-trt plugins list\n"
    "      every plugin: inputs, outputs, attributes, supported GPU architectures, kernel variants\n"
    "  sq-trt plugins ptx W8A8Gemm --arch sm_90 --out ptx/\n"
    "      one .ptx file per AOT variant (per autotune tactic for the GEMMs, per layout for the\n"
    "      per-token quantizers), compiled exactly as the plugin compiles it inside a TensorRT build;\n"
    "      grep them for `mma.sync ... s32.s8.s8.s32` / `wgmma ... s8` to see the integer tensor cores.\n"
    "\nNeeds the `kernels` extra (triton) for `ptx`. Blackwell (sm_100/sm_120) is refused for now."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``list`` and ``ptx NAME --arch --out [--dtype] [--hidden]``."""
    sub = parser.add_subparsers(dest="plugins_command", metavar="<list|ptx>", required=True)
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
    variants = catalog.compile_variants(info.name, arch, dtype=args.dtype, hidden=args.hidden)
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


def run(args: argparse.Namespace) -> int:
    """Dispatch ``list`` / ``ptx``."""
    return _list() if args.plugins_command == "list" else _ptx(args)
