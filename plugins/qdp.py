"""TensorRT Quickly Deployable Plugin (QDP) definitions: ``sq_trt::PerTokenQuant`` and its fused variants.

Each plugin has a ``@trtp.register`` shape/type function and a
``@trtp.aot_impl`` that compiles the Triton kernel to PTX; TensorRT embeds that
PTX in the engine, so the ``.plan`` runs in a C++ runtime with no Python and no
plugin library. There is no JIT (``@trtp.impl``) implementation: an engine that
needs Python at run time is not what this project ships.

``tensorrt.plugin`` validates each definition's signature with ``inspect`` and
``issubclass``, so the annotations it sees must be its own classes, which exist
only once ``tensorrt`` is imported: :func:`define_plugins` attaches them to the
functions at registration time.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from types import GenericAlias, ModuleType
from typing import Any

from sq_trt.plugins import LAYERNORM_PER_TOKEN_QUANT

from sq_trt import plugin_spec
from sq_trt.errors import ConfigError

# tensorrt.plugin gained @aot_impl (ahead-of-time QDPs) in TensorRT 10.9.0.
MIN_TENSORRT_VERSION = (10, 9)
# Target GPU for the AOT compile when TensorRT's build machine has no visible GPU
# (or to override it): a compute capability such as "89" or "sm_90".
ARCH_ENV = "SQ_TRT_CUDA_ARCH"

_TRITON_DTYPES = {"HALF": "fp16", "BF16": "bf16", "FLOAT": "fp32"}


@dataclass
class _Registration:
    lazy: bool
    functions: dict[str, Callable[..., Any]] = field(default_factory=dict)


_REGISTRATION: _Registration | None = None
_ARCH_OVERRIDE: int | None = None


def plugin_id(name: str) -> str:
    """``"sq_trt::<name>"``, the ID ``tensorrt.plugin`` registers ``name`` under."""
    return f"{plugin_spec.PLUGIN_NAMESPACE}::{name}"


def set_target_arch(arch: int | str | None) -> None:
    """Compile the plugins' PTX for this GPU architecture (``None``: detect it)."""
    from sq_trt.plugins.aot import normalize_arch

    global _ARCH_OVERRIDE
    _ARCH_OVERRIDE = None if arch is None else normalize_arch(arch)


def target_arch() -> int:
    """The GPU architecture the AOT compile targets.

    In order: :func:`set_target_arch`, ``$SQ_TRT_CUDA_ARCH``, the current CUDA
    device (TensorRT builds for the GPU it runs on).

    Raises:
        ConfigError: None of these gives an architecture.
    """
    from sq_trt.plugins.aot import normalize_arch

    if _ARCH_OVERRIDE is not None:
        return _ARCH_OVERRIDE
    if os.environ.get(ARCH_ENV):
        return normalize_arch(os.environ[ARCH_ENV])
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability()
            return normalize_arch(f"{major}{minor}")
    except ImportError:
        pass
    raise ConfigError(
        f"cannot tell which GPU to compile the sq_trt plugin kernels for: no CUDA device is visible; "
        f"set {ARCH_ENV} (e.g. {ARCH_ENV}=89) or call sq_trt.plugins.qdp.set_target_arch()"
    )


def triton_dtype(trt_dtype: Any) -> str:
    """Triton pointer element type for a TensorRT ``DataType`` (fp16, bf16, fp32).

    Raises:
        ConfigError: Any other dtype.
    """
    name = getattr(trt_dtype, "name", str(trt_dtype)).rsplit(".", 1)[-1]
    if name not in _TRITON_DTYPES:
        raise ConfigError(
            f"sq_trt per-token quantization got input dtype {name}; expected HALF (float16), BF16 or FLOAT"
        )
    return _TRITON_DTYPES[name]


def _static_dim(expr: Any) -> int | None:
    """The value of a build-time-constant shape expression, else None."""
    if getattr(expr, "is_fake", True) or not expr.is_constant:
        return None
    return int(expr.constant_value())


def _rows_expr(shape_expr: Any) -> Any:
    rows: Any = 1
    for dim in list(shape_expr)[:-1]:
        rows = dim if isinstance(rows, int) else rows * dim
    return rows


def _compile(kernel_name: str, inputs: dict[str, Any], constexprs: dict[str, Any]) -> tuple[str, str, Any]:
    """Compile ``kernel_name`` for these input descriptors (pointer name -> TensorDesc; ``x_ptr`` first)."""
    from sq_trt.deps import require

    require("triton", stage="build (sq_trt plugin kernels)")
    from sq_trt.plugins import kernels
    from sq_trt.plugins.aot import compile_ptx

    x = inputs["x_ptr"]
    block, single_pass, num_warps = kernels.launch_config(_static_dim(x.shape_expr[-1]))
    signature = {name: f"*{triton_dtype(desc.dtype)}" for name, desc in inputs.items()}
    signature.update(
        {"n_rows": "i32", "n_cols": "i32", "xq_ptr": "*i8", "amax_ptr": f"*{triton_dtype(x.dtype)}"}
    )
    constants = {**constexprs, "BLOCK": block, "SINGLE_PASS": single_pass, "USE_LIBDEVICE": True}
    return compile_ptx(
        getattr(kernels, kernel_name), signature, constants, target_arch(), num_warps=num_warps
    )


def _annotated(fn: Callable[..., Any], annotations: dict[str, Any]) -> Callable[..., Any]:
    # tensorrt.plugin validates a definition by `inspect.signature` + `issubclass` on its
    # annotations, so they must be the real tensorrt.plugin classes, known only at run time.
    fn.__annotations__ = dict(annotations)
    return fn


def define_plugins(trt: ModuleType, trtp: ModuleType, *, lazy: bool) -> dict[str, Callable[..., Any]]:
    """Register the three plugins with ``tensorrt.plugin`` (not idempotent; see :func:`register`).

    Args:
        trt: The ``tensorrt`` module.
        trtp: Its ``tensorrt.plugin`` module.
        lazy: ``lazy_register``: validate and record the definitions but create the
            plugin creators only when first instantiated through ``trtp.op``. The
            ONNX parser looks creators up in the registry, so builds need ``False``.

    Returns:
        The decorated functions by name (for tests and inspection).
    """
    desc = trtp.TensorDesc
    # Built with GenericAlias: these are run-time values, not annotations a type checker could read.
    two_outputs = GenericAlias(tuple, (desc, desc))
    aot_return = GenericAlias(tuple, (str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymIntExprs))

    def quant_outputs(x: Any) -> tuple[Any, Any]:
        x_q = x.like()
        x_q.dtype = trt.int8
        amax = trtp.from_shape_expr(tuple(list(x.shape_expr)[:-1]) + (1,), dtype=x.dtype)
        return x_q, amax

    def launch(meta: Any, x: Any) -> tuple[Any, Any]:
        # One program per token row; the kernel's int32 scalars are (n_rows, n_cols).
        rows = _rows_expr(x.shape_expr)
        params = trtp.KernelLaunchParams()
        # An empty batch would be a zero-sized grid, which CUDA refuses; the kernel's
        # `row < n_rows` guard makes the one extra program a no-op.
        params.grid_x = rows if isinstance(rows, int) else trtp.max(rows, 1)
        params.block_x = meta.num_warps * 32
        params.shared_mem = meta.shared_mem
        extra = trtp.SymIntExprs.from_tuple([trtp.SymInt32(rows), trtp.SymInt32(x.shape_expr[-1])])
        return params, extra

    def per_token_quant_desc(x: Any) -> Any:
        return quant_outputs(x)

    def per_token_quant_aot(x: Any, outputs: Any, tactic: int) -> Any:
        name, ptx, meta = _compile("per_token_quant_kernel", {"x_ptr": x}, {})
        params, extra = launch(meta, x)
        return name, ptx, params, extra

    def rmsnorm_per_token_quant_desc(x: Any, weight: Any, epsilon: float) -> Any:
        return quant_outputs(x)

    def rmsnorm_per_token_quant_aot(x: Any, weight: Any, epsilon: float, outputs: Any, tactic: int) -> Any:
        name, ptx, meta = _compile(
            "rmsnorm_per_token_quant_kernel", {"x_ptr": x, "w_ptr": weight}, {"EPS": float(epsilon)}
        )
        params, extra = launch(meta, x)
        return name, ptx, params, extra

    def layernorm_per_token_quant_desc(x: Any, weight: Any, bias: Any, epsilon: float) -> Any:
        return quant_outputs(x)

    def layernorm_per_token_quant_aot(
        x: Any, weight: Any, bias: Any, epsilon: float, outputs: Any, tactic: int
    ) -> Any:
        inputs = {"x_ptr": x, "w_ptr": weight, "b_ptr": bias}
        name, ptx, meta = _compile("layernorm_per_token_quant_kernel", inputs, {"EPS": float(epsilon)})
        params, extra = launch(meta, x)
        return name, ptx, params, extra

    plain = plugin_id(plugin_spec.PER_TOKEN_QUANT)
    fused = plugin_id(plugin_spec.RMSNORM_PER_TOKEN_QUANT)
    layer = plugin_id(LAYERNORM_PER_TOKEN_QUANT)
    rms_inputs = {"x": desc, "weight": desc, "epsilon": float}
    ln_inputs = {"x": desc, "weight": desc, "bias": desc, "epsilon": float}
    functions = {
        "per_token_quant_desc": trtp.register(plain, lazy_register=lazy)(
            _annotated(per_token_quant_desc, {"x": desc, "return": two_outputs})
        ),
        "per_token_quant_aot": trtp.aot_impl(plain)(
            _annotated(
                per_token_quant_aot, {"x": desc, "outputs": two_outputs, "tactic": int, "return": aot_return}
            )
        ),
        "rmsnorm_per_token_quant_desc": trtp.register(fused, lazy_register=lazy)(
            _annotated(rmsnorm_per_token_quant_desc, {**rms_inputs, "return": two_outputs})
        ),
        "rmsnorm_per_token_quant_aot": trtp.aot_impl(fused)(
            _annotated(
                rmsnorm_per_token_quant_aot,
                {**rms_inputs, "outputs": two_outputs, "tactic": int, "return": aot_return},
            )
        ),
        "layernorm_per_token_quant_desc": trtp.register(layer, lazy_register=lazy)(
            _annotated(layernorm_per_token_quant_desc, {**ln_inputs, "return": two_outputs})
        ),
        "layernorm_per_token_quant_aot": trtp.aot_impl(layer)(
            _annotated(
                layernorm_per_token_quant_aot,
                {**ln_inputs, "outputs": two_outputs, "tactic": int, "return": aot_return},
            )
        ),
    }  # fmt: skip
    return functions


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def register(trt_module: ModuleType | None = None, *, lazy: bool = False) -> dict[str, Callable[..., Any]]:
    """Register the ``sq_trt`` plugins with TensorRT, once per process.

    Call before parsing an ONNX that contains ``sq_trt`` nodes. Later calls
    return the first call's functions.

    Args:
        trt_module: The ``tensorrt`` module (default: import it). TensorRT-RTX
            has no Python plugin API and is refused.
        lazy: See :func:`define_plugins`; must match any earlier call.

    Returns:
        The decorated functions by name.

    Raises:
        MissingDependencyError: ``tensorrt`` is not installed.
        ConfigError: A TensorRT older than :data:`MIN_TENSORRT_VERSION`, a module
            other than ``tensorrt``, or ``lazy`` differing from an earlier call.
    """
    global _REGISTRATION
    import importlib

    from sq_trt.deps import require

    trt = trt_module if trt_module is not None else require("tensorrt", stage="build")
    if trt.__name__ != "tensorrt":
        raise ConfigError(
            f"the sq_trt plugins need TensorRT proper (`tensorrt`), got `{trt.__name__}`; TensorRT-RTX has "
            "no Python plugin API, so use the portable per-token graph (no plugin) with that backend"
        )
    version = getattr(trt, "__version__", "0")
    if _version_tuple(version) < MIN_TENSORRT_VERSION:
        wanted = ".".join(map(str, MIN_TENSORRT_VERSION))
        raise ConfigError(
            f"TensorRT {version} has no ahead-of-time Python plugins; the sq_trt plugins need TensorRT >= {wanted}"
        )
    if _REGISTRATION is not None:
        if _REGISTRATION.lazy != lazy:
            raise ConfigError(
                f"the sq_trt plugins were already registered with lazy={_REGISTRATION.lazy} in this process; "
                f"cannot re-register with lazy={lazy} (start a new process)"
            )
        return dict(_REGISTRATION.functions)
    trtp = importlib.import_module(f"{trt.__name__}.plugin")
    functions = define_plugins(trt, trtp, lazy=lazy)
    _REGISTRATION = _Registration(lazy=lazy, functions=functions)
    return dict(functions)
