"""What the QDP plugin modules share: plugin IDs, the target GPU architecture, shape helpers.

:mod:`sq_trt.plugins.qdp` (per-token quantization) and :mod:`sq_trt.plugins.qdp_gemm`
(the fused GEMMs) both import this module, and :func:`sq_trt.plugins.qdp.register`
registers both, so neither imports the other's definitions.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from sq_trt import plugin_spec
from sq_trt.errors import ConfigError

# Target GPU for the AOT compile when the CUDA driver reports no GPU: a compute
# capability such as "89" or "sm_90".
ARCH_ENV = "SQ_TRT_CUDA_ARCH"

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

    In order: :func:`set_target_arch`, the first GPU the CUDA driver reports
    (:func:`sq_trt.engine.gpu.visible_gpus`, the query the builder uses: TensorRT
    builds for the GPU it runs on, and NVIDIA's container has the driver but
    ships sq-trt's CPU build of torch), then ``$SQ_TRT_CUDA_ARCH`` for builds
    with no visible GPU.

    Raises:
        ConfigError: None of these gives an architecture, or the GPU's is not one
            the kernels support.
    """
    from sq_trt.engine.gpu import visible_gpus
    from sq_trt.plugins.aot import normalize_arch

    if _ARCH_OVERRIDE is not None:
        return _ARCH_OVERRIDE
    gpus = visible_gpus()
    if gpus:
        return normalize_arch(gpus[0].compute_capability)
    if os.environ.get(ARCH_ENV):
        return normalize_arch(os.environ[ARCH_ENV])
    raise ConfigError(
        f"cannot tell which GPU to compile the sq_trt plugin kernels for: the CUDA driver reports no GPU "
        f"(run the container with --gpus all) and {ARCH_ENV} is not set; set it (e.g. {ARCH_ENV}=90) "
        "or call sq_trt.plugins.qdp.set_target_arch()"
    )


def static_dim(expr: Any) -> int | None:
    """The value of a build-time-constant shape expression, else None."""
    if getattr(expr, "is_fake", True) or not expr.is_constant:
        return None
    return int(expr.constant_value())


def rows_expr(shape_expr: Any) -> Any:
    rows: Any = 1
    for dim in list(shape_expr)[:-1]:
        rows = dim if isinstance(rows, int) else rows * dim
    return rows


def annotated(fn: Callable[..., Any], annotations: dict[str, Any]) -> Callable[..., Any]:
    # tensorrt.plugin validates a definition by `inspect.signature` + `issubclass` on its
    # annotations, so they must be the real tensorrt.plugin classes, known only at run time.
    fn.__annotations__ = dict(annotations)
    return fn
