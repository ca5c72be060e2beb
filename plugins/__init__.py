"""sq-trt's TensorRT plugins (installed as ``sq_trt.plugins``).

* :mod:`.kernels`: the Triton kernels (per-token INT8 quantization, fused RMSNorm / LayerNorm variants);
* :mod:`.gemm`: the fused W8A8 GEMM kernels (int8 tensor cores, per-token x per-channel epilogue) and their tiles;
* :mod:`.launch`: run them on torch tensors (CUDA, or CPU under ``TRITON_INTERPRET=1``);
* :mod:`.aot`: compile them to PTX for a GPU architecture, no GPU needed, cached on disk;
* :mod:`.qdp`, :mod:`.qdp_gemm`: the TensorRT Quickly Deployable Plugin definitions (AOT implementation;
  the GEMMs' tile configurations are autotune tactics);
* :mod:`.catalog`: every plugin's interface and its AOT variants' PTX (``sq-trt plugins``).

Nothing heavy is imported here: :func:`register` imports ``tensorrt`` and Triton lazily.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from sq_trt import plugin_spec
from sq_trt.errors import ConfigError

__all__ = ["LAYERNORM_PER_TOKEN_QUANT", "onnx_node_attributes", "register"]

LAYERNORM_PER_TOKEN_QUANT: str = plugin_spec.LAYERNORM_PER_TOKEN_QUANT
# Each plugin's own attributes (the fields TensorRT passes to it), beyond namespace/version/aot.
_FIELDS: dict[str, tuple[str, ...]] = {
    plugin_spec.PER_TOKEN_QUANT: (),
    plugin_spec.RMSNORM_PER_TOKEN_QUANT: ("epsilon",),
    LAYERNORM_PER_TOKEN_QUANT: ("epsilon",),
    plugin_spec.W8A8_GEMM: ("has_bias",),
    plugin_spec.QUANT_W8A8_GEMM: ("has_smooth", "has_bias"),
}


def register(trt_module: ModuleType | None = None, *, lazy: bool = False) -> dict[str, Callable[..., Any]]:
    """Register ``sq_trt::PerTokenQuant``, its RMSNorm / LayerNorm fused variants and the W8A8 GEMMs with TensorRT.

    Idempotent; call it before parsing an ONNX that contains ``sq_trt`` nodes.
    See :func:`sq_trt.plugins.qdp.register`.
    """
    from sq_trt.plugins import qdp

    return qdp.register(trt_module, lazy=lazy)


def onnx_node_attributes(
    op_type: str,
    *,
    epsilon: float | None = None,
    aot: bool = True,
    has_bias: int | None = None,
    has_smooth: int | None = None,
) -> dict[str, Any]:
    """The attributes an ONNX node needs for TensorRT's parser to map it to the plugin.

    The parser's plugin fallback matches ``op_type`` to the plugin name, reads
    ``plugin_namespace`` and ``plugin_version`` (TensorRT >= 10.10 also takes the
    namespace from the node's domain), takes ``aot`` to pick the ahead-of-time
    implementation, and passes every other attribute to the plugin as a field.
    Give the node ``domain=plugin_spec.ONNX_DOMAIN`` as well.

    Args:
        op_type: ``PerTokenQuant``, ``RMSNormPerTokenQuant``, ``LayerNormPerTokenQuant``,
            ``W8A8Gemm`` or ``QuantW8A8Gemm``.
        epsilon: Normalization epsilon (required for the fused norm ops, refused otherwise).
        aot: Request the AOT implementation (the only one these plugins have).
        has_bias: 0/1, the GEMMs' bias switch (required for them, refused otherwise).
        has_smooth: 0/1, ``QuantW8A8Gemm``'s smoothing switch (required for it, refused otherwise).

    Returns:
        Attribute name -> value, ready for ``onnx.helper.make_node(**attrs)``.
    """
    attrs: dict[str, Any] = {
        "plugin_namespace": plugin_spec.PLUGIN_NAMESPACE,
        "plugin_version": plugin_spec.PLUGIN_VERSION,
    }
    if aot:
        attrs["aot"] = 1  # ONNX has no bool attribute type; TensorRT reads an INT
    if op_type not in _FIELDS:
        raise ConfigError(f"no sq_trt plugin is named {op_type!r}; expected one of {list(_FIELDS)}")
    given = {"epsilon": epsilon, "has_bias": has_bias, "has_smooth": has_smooth}
    for name, value in given.items():
        if value is not None and name not in _FIELDS[op_type]:
            hint = "; did you mean RMSNormPerTokenQuant?" if name == "epsilon" else ""
            raise ConfigError(f"{op_type} takes no {name} (got {value!r}){hint}")
    if "epsilon" in _FIELDS[op_type]:
        if epsilon is None or not epsilon > 0:
            raise ConfigError(f"{op_type} needs a positive epsilon attribute, got {epsilon!r}")
        attrs["epsilon"] = float(epsilon)
    for flag in ("has_smooth", "has_bias"):
        if flag in _FIELDS[op_type]:
            value = given[flag]
            if value not in (0, 1):
                raise ConfigError(f"{op_type} needs {flag} 0 or 1, got {value!r}")
            attrs[flag] = 1 if value else 0
    return attrs
