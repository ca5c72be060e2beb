"""What each ``sq_trt`` plugin takes and returns, and the PTX of each of its AOT variants, with no GPU.

:mod:`sq_trt.plugin_spec` is the contract; this module restates it as data for ``sq-trt plugins list``
and compiles each plugin's variants (one per layout, or one per autotune tactic for the GEMMs) the
way the plugin's ``@trtp.aot_impl`` does, for ``sq-trt plugins ptx``. Triton is imported only by
:func:`compile_variants`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sq_trt import plugin_spec
from sq_trt.errors import ConfigError

_FLOAT = "float16|bfloat16|float32"


@dataclass(frozen=True)
class PluginInfo:
    """One plugin's interface (``name: type [shape]`` strings) and its Triton kernel."""

    name: str
    summary: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attributes: tuple[str, ...]
    kernel: str


_QUANT_OUTPUTS = ("x_q: int8 [..., K]", "amax: x's dtype [..., 1]")
_GEMM_WEIGHTS = ("weight: int8 [N, K]", "w_scale: float32 [N]", "bias: float32 [N]")

PLUGINS: tuple[PluginInfo, ...] = (
    PluginInfo(
        plugin_spec.PER_TOKEN_QUANT, "per-token INT8 quantization (127 / amax, round half to even)",
        (f"x: {_FLOAT} [..., K]",), _QUANT_OUTPUTS, (), "per_token_quant_kernel",
    ),
    PluginInfo(
        plugin_spec.RMSNORM_PER_TOKEN_QUANT, "RMSNorm, then per-token INT8 quantization (one read of x)",
        (f"x: {_FLOAT} [..., K]", f"weight: {_FLOAT} [K]"), _QUANT_OUTPUTS, ("epsilon: float",),
        "rmsnorm_per_token_quant_kernel",
    ),
    PluginInfo(
        plugin_spec.LAYERNORM_PER_TOKEN_QUANT, "LayerNorm, then per-token INT8 quantization (one read of x)",
        (f"x: {_FLOAT} [..., K]", f"weight: {_FLOAT} [K]", f"bias: {_FLOAT} [K]"), _QUANT_OUTPUTS,
        ("epsilon: float",), "layernorm_per_token_quant_kernel",
    ),
    PluginInfo(
        plugin_spec.W8A8_GEMM,
        "INT8 GEMM, int32 accumulation, y = (acc * (amax / 127)) * w_scale + bias in float32",
        ("x_q: int8 [..., K]", f"amax: {_FLOAT} [..., 1]", *_GEMM_WEIGHTS), ("y: amax's dtype [..., N]",),
        ("has_bias: int 0/1",), "w8a8_gemm_kernel",
    ),
    PluginInfo(
        plugin_spec.QUANT_W8A8_GEMM,
        "per-token quantization of x * smooth in registers, then W8A8Gemm",
        (f"x: {_FLOAT} [..., K]", "smooth: float32 [K]", *_GEMM_WEIGHTS), ("y: x's dtype [..., N]",),
        ("has_smooth: int 0/1", "has_bias: int 0/1"), "quant_w8a8_gemm_kernel",
    ),
)  # fmt: skip


def plugin_info(name: str) -> PluginInfo:
    """The plugin called ``name`` (case-insensitive; ``sq_trt::`` prefix allowed).

    Raises:
        ConfigError: No such plugin.
    """
    wanted = name.removeprefix(f"{plugin_spec.PLUGIN_NAMESPACE}::").lower()
    for info in PLUGINS:
        if info.name.lower() == wanted:
            return info
    raise ConfigError(f"no sq_trt plugin is named {name!r}; expected one of {[p.name for p in PLUGINS]}")


@dataclass(frozen=True)
class Variant:
    """One AOT-compiled variant of a plugin's kernel."""

    label: str
    kernel_name: str
    ptx: str
    meta: Any


def _quant_variants(info: PluginInfo, arch: int, dtype: str, hidden: int) -> list[Variant]:
    from sq_trt.plugins import kernels
    from sq_trt.plugins.aot import compile_ptx

    pointers = {"x_ptr": f"*{dtype}"}
    constexprs: dict[str, Any] = {}
    if info.name != plugin_spec.PER_TOKEN_QUANT:
        pointers["w_ptr"] = f"*{dtype}"
        constexprs["EPS"] = 1e-5
    if info.name == plugin_spec.LAYERNORM_PER_TOKEN_QUANT:
        pointers["b_ptr"] = f"*{dtype}"
    signature = {**pointers, "n_rows": "i32", "n_cols": "i32", "xq_ptr": "*i8", "amax_ptr": f"*{dtype}"}
    variants = []
    for label, k in ((f"single-pass-k{hidden}", hidden), ("streaming", None)):
        block, single, warps = kernels.launch_config(k)
        consts = {**constexprs, "BLOCK": block, "SINGLE_PASS": single, "USE_LIBDEVICE": True}
        name, ptx, meta = compile_ptx(getattr(kernels, info.kernel), signature, consts, arch, num_warps=warps)
        variants.append(Variant(label, name, ptx, meta))
    return variants


def compile_variants(
    name: str, arch: int | str, *, dtype: str = "fp16", hidden: int = 4096, alignment: str = "aligned"
) -> list[Variant]:
    """Compile every AOT variant of a plugin's kernel to PTX, as its ``aot_impl`` would.

    Args:
        name: Plugin name (see :data:`PLUGINS`).
        arch: GPU architecture (``sm_90``, ``89``...).
        dtype: Float type of the activation side: ``fp16``, ``bf16`` or ``fp32``.
        hidden: Hidden size of the per-token plugins' single-pass variant.
        alignment: The GEMMs' ``aligned`` variants (weights meeting the alignment contract of
            :mod:`sq_trt.plugins.gemm`) or their ``unaligned`` fallback (labels end in ``-unaligned``).

    Returns:
        One :class:`Variant` per layout (per-token plugins) or per autotune tactic (GEMMs).

    Raises:
        ConfigError: Unknown plugin, architecture or dtype.
    """
    from sq_trt.deps import require

    if dtype not in ("fp16", "bf16", "fp32"):
        raise ConfigError(f"dtype {dtype!r} is not a plugin activation type; expected fp16, bf16 or fp32")
    info = plugin_info(name)
    require("triton", stage="plugins ptx")
    from sq_trt.plugins.aot import normalize_arch

    cc = normalize_arch(arch)
    if info.kernel.endswith("per_token_quant_kernel"):
        return _quant_variants(info, cc, dtype, hidden)
    from sq_trt.plugins import gemm

    suffix = "" if alignment == gemm.ALIGNED else f"-{alignment}"
    variants = []
    for tactic in range(1, len(gemm.TILE_CONFIGS) + 1):
        kernel_name, ptx, meta = gemm.compile_variant(
            info.kernel, tactic, cc, dtype=dtype, alignment=alignment
        )
        label = f"tactic{tactic}-{gemm.tile_config(tactic).label()}{suffix}"
        variants.append(Variant(label, kernel_name, ptx, meta))
    return variants


_MMA_RE = re.compile(r"^\s*((?:w?g?mma|tcgen05\.mma)\.[^\s;]+)", re.MULTILINE)


def mma_instructions(ptx: str) -> list[str]:
    """Every matrix-multiply instruction of a PTX text (``mma.sync...``, ``wgmma.mma_async...``)."""
    return [m for m in _MMA_RE.findall(ptx) if "mma_async" in m or m.startswith(("mma.sync", "tcgen05.mma"))]


def variant_summary(info: PluginInfo) -> str:
    """How many AOT variants a plugin has and what they differ by (no compile)."""
    if info.kernel.endswith("per_token_quant_kernel"):
        return "2 AOT variants: single-pass row in registers, streaming row"
    from sq_trt.plugins.gemm import TILE_CONFIGS

    tiles = ", ".join(f"{t}={cfg.label()}" for t, cfg in enumerate(TILE_CONFIGS, start=1))
    return f"{len(TILE_CONFIGS)} AOT variants = TensorRT autotune tactics {tiles}"
