"""QDP definitions of the fused W8A8 GEMM plugins: ``sq_trt::W8A8Gemm`` and ``sq_trt::QuantW8A8Gemm``.

Each has ``@trtp.register`` (output shape/type), ``@trtp.autotune`` (the I/O types it takes and
one custom tactic per tile configuration of :data:`sq_trt.plugins.gemm.TILE_CONFIGS` worth timing
for the weight's (N, K)) and ``@trtp.aot_impl`` (compiles the variant of the tactic TensorRT
hands it to PTX). TensorRT times every tactic at build time and embeds the winner's PTX in the
engine, so the ``.plan`` runs with no Python. :func:`sq_trt.plugins.qdp.register` calls
:func:`define_gemm_plugins`; the contract is :mod:`sq_trt.plugin_spec`.
"""

from __future__ import annotations

from collections.abc import Callable
from types import GenericAlias, ModuleType
from typing import Any

from sq_trt import plugin_spec
from sq_trt.errors import ConfigError
from sq_trt.plugins.qdp_base import annotated, plugin_id, rows_expr, static_dim, target_arch

_FLOAT_TYPES = "FP16|BF16|FP32"
_TRITON_FLOAT = {"HALF": "fp16", "BF16": "bf16", "FLOAT": "fp32"}


def _float_type(desc: Any, what: str) -> str:
    name = getattr(desc.dtype, "name", str(desc.dtype)).rsplit(".", 1)[-1]
    if name not in _TRITON_FLOAT:
        raise ConfigError(
            f"sq_trt fused GEMM got {what} of dtype {name}; expected HALF (float16), BF16 or FLOAT"
        )
    return _TRITON_FLOAT[name]


def _weight_tactics(weight: Any) -> list[int]:
    from sq_trt.plugins import gemm

    n_expr, k_expr = list(weight.shape_expr)[:2]
    return gemm.tactics_for(static_dim(n_expr), static_dim(k_expr))


def _compile_gemm(
    kernel_name: str, flt: str, out: str, flags: dict[str, bool], tactic: int, weight: Any
) -> tuple[str, str, Any, Any]:
    """PTX of one tactic's variant for the target GPU; returns (name, ptx, metadata, tile).

    The weight's (N, K), constant at build time, choose the aligned variant (16-byte rows:
    cp.async / vector loads) or, only where they break its contract, the unaligned one; the
    engine manifest names which (:func:`sq_trt.plugins.gemm.alignment_variant`).
    """
    from sq_trt.deps import require

    require("triton", stage="build (sq_trt fused GEMM plugin)")
    from sq_trt.plugins import gemm

    n_expr, k_expr = list(weight.shape_expr)[:2]
    shape = (static_dim(n_expr), static_dim(k_expr))
    alignment = gemm.alignment_variant(*shape, out)
    name, ptx, meta = gemm.compile_variant(
        kernel_name,
        tactic,
        target_arch(),
        dtype=flt,
        out_dtype=out,
        alignment=alignment,
        shape=shape,
        **flags,
    )
    return name, ptx, meta, gemm.tile_config(tactic)


def define_gemm_plugins(trt: ModuleType, trtp: ModuleType, *, lazy: bool) -> dict[str, Callable[..., Any]]:
    """Register ``W8A8Gemm`` and ``QuantW8A8Gemm`` with ``tensorrt.plugin`` (see ``qdp.define_plugins``).

    Args:
        trt: The ``tensorrt`` module.
        trtp: Its ``tensorrt.plugin`` module.
        lazy: ``lazy_register`` (builds need ``False``).

    Returns:
        The decorated functions by name (``*_desc``, ``*_autotune``, ``*_aot``).
    """
    desc = trtp.TensorDesc
    one_output = GenericAlias(tuple, (desc,))
    aot_return = GenericAlias(tuple, (str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymIntExprs))
    tune_return = GenericAlias(list, (trtp.AutoTuneCombination,))

    def gemm_output(x: Any, weight: Any, dtype: Any) -> tuple[Any]:
        shape = tuple(list(x.shape_expr)[:-1]) + (next(iter(weight.shape_expr)),)
        return (trtp.from_shape_expr(shape, dtype=dtype),)

    def launch(meta: Any, tile: Any, x: Any, weight: Any) -> tuple[Any, Any]:
        # A 1-D grid of BLOCK_M x BLOCK_N output tiles (grouped order inside the kernel);
        # max(., 1) because CUDA refuses an empty grid and the kernel masks the extra tile.
        rows = rows_expr(x.shape_expr)
        n_expr, k_expr = list(weight.shape_expr)[:2]
        params = trtp.KernelLaunchParams()
        if isinstance(rows, int):
            m_tiles: Any = max(1, -(-rows // tile.block_m))
        else:
            m_tiles = trtp.max(trtp.cdiv(rows, tile.block_m), 1)
        params.grid_x = trtp.cdiv(n_expr, tile.block_n) * m_tiles
        params.block_x = meta.num_warps * 32
        params.shared_mem = meta.shared_mem
        extra = trtp.SymIntExprs.from_tuple(
            [trtp.SymInt32(rows), trtp.SymInt32(n_expr), trtp.SymInt32(k_expr)]
        )
        return params, extra

    def w8a8_gemm_desc(x_q: Any, amax: Any, weight: Any, w_scale: Any, bias: Any, has_bias: int) -> Any:
        return gemm_output(x_q, weight, amax.dtype)

    def w8a8_gemm_autotune(x_q: Any, amax: Any, weight: Any, w_scale: Any, bias: Any, outputs: Any) -> Any:
        types = f"INT8, {_FLOAT_TYPES}, INT8, FP32, FP32, {_FLOAT_TYPES}"
        return [trtp.AutoTuneCombination(types, "LINEAR", _weight_tactics(weight))]

    def w8a8_gemm_aot(
        x_q: Any, amax: Any, weight: Any, w_scale: Any, bias: Any, has_bias: int, outputs: Any, tactic: int
    ) -> Any:
        flt, out = _float_type(amax, "amax"), _float_type(outputs[0], "y")
        flags = {"has_bias": bool(has_bias)}
        name, ptx, meta, tile = _compile_gemm("w8a8_gemm_kernel", flt, out, flags, tactic, weight)
        params, extra = launch(meta, tile, x_q, weight)
        return name, ptx, params, extra

    def quant_w8a8_gemm_desc(
        x: Any, smooth: Any, weight: Any, w_scale: Any, bias: Any, has_smooth: int, has_bias: int
    ) -> Any:
        return gemm_output(x, weight, x.dtype)

    def quant_w8a8_gemm_autotune(
        x: Any, smooth: Any, weight: Any, w_scale: Any, bias: Any, outputs: Any
    ) -> Any:
        types = f"{_FLOAT_TYPES}, FP32, INT8, FP32, FP32, {_FLOAT_TYPES}"
        return [trtp.AutoTuneCombination(types, "LINEAR", _weight_tactics(weight))]

    def quant_w8a8_gemm_aot(
        x: Any, smooth: Any, weight: Any, w_scale: Any, bias: Any, has_smooth: int, has_bias: int,
        outputs: Any, tactic: int,
    ) -> Any:  # fmt: skip
        flt = _float_type(x, "x")
        flags = {"has_smooth": bool(has_smooth), "has_bias": bool(has_bias)}
        name, ptx, meta, tile = _compile_gemm("quant_w8a8_gemm_kernel", flt, flt, flags, tactic, weight)
        params, extra = launch(meta, tile, x, weight)
        return name, ptx, params, extra

    plain, quant = plugin_id(plugin_spec.W8A8_GEMM), plugin_id(plugin_spec.QUANT_W8A8_GEMM)
    tensors = {"weight": desc, "w_scale": desc, "bias": desc}
    plain_in = {"x_q": desc, "amax": desc, **tensors}
    quant_in = {"x": desc, "smooth": desc, **tensors}
    plain_attrs = {**plain_in, "has_bias": int}
    quant_attrs = {**quant_in, "has_smooth": int, "has_bias": int}
    aot_tail = {"outputs": one_output, "tactic": int, "return": aot_return}
    tune_tail = {"outputs": one_output, "return": tune_return}
    functions: dict[str, Callable[..., Any]] = {}
    functions["w8a8_gemm_desc"] = trtp.register(plain, lazy_register=lazy)(
        annotated(w8a8_gemm_desc, {**plain_attrs, "return": one_output})
    )
    functions["w8a8_gemm_autotune"] = trtp.autotune(plain)(
        annotated(w8a8_gemm_autotune, {**plain_in, **tune_tail})
    )
    functions["w8a8_gemm_aot"] = trtp.aot_impl(plain)(annotated(w8a8_gemm_aot, {**plain_attrs, **aot_tail}))
    functions["quant_w8a8_gemm_desc"] = trtp.register(quant, lazy_register=lazy)(
        annotated(quant_w8a8_gemm_desc, {**quant_attrs, "return": one_output})
    )
    functions["quant_w8a8_gemm_autotune"] = trtp.autotune(quant)(
        annotated(quant_w8a8_gemm_autotune, {**quant_in, **tune_tail})
    )
    functions["quant_w8a8_gemm_aot"] = trtp.aot_impl(quant)(
        annotated(quant_w8a8_gemm_aot, {**quant_attrs, **aot_tail})
    )
    return functions
