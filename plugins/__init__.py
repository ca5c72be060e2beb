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
_NORM_OPS = (plugin_spec.RMSNORM_PER_TOKEN_QUANT, LAYERNORM_PER_TOKEN_QUANT)


def register(trt_module: ModuleType | None = None, *, lazy: bool = False) -> dict[str, Callable[..., Any]]:
    """Register ``sq_trt::PerTokenQuant``, its RMSNorm / LayerNorm fused variants and the W8A8 GEMMs with TensorRT.

    Idempotent; call it before parsing an ONNX that contains ``sq_trt`` nodes.
    See :func:`sq_trt.plugins.qdp.register`.
    """
    from sq_trt.plugins import qdp

    return qdp.register(trt_module, lazy=lazy)


def onnx_node_attributes(op_type: str, *, epsilon: float | None = None, aot: bool = True) -> dict[str, Any]:
    """The attributes an ONNX node needs for TensorRT's parser to map it to the plugin.

    The parser's plugin fallback matches ``op_type`` to the plugin name, reads
    ``plugin_namespace`` and ``plugin_version`` (TensorRT >= 10.10 also takes the
    namespace from the node's domain), takes ``aot`` to pick the ahead-of-time
    implementation, and passes every other attribute to the plugin as a field.
    Give the node ``domain=plugin_spec.ONNX_DOMAIN`` as well.

    Args:
        op_type: ``PerTokenQuant``, ``RMSNormPerTokenQuant`` or ``LayerNormPerTokenQuant``.
        epsilon: Normalization epsilon (required for the fused ops, refused otherwise).
        aot: Request the AOT implementation (the only one these plugins have).

    Returns:
        Attribute name -> value, ready for ``onnx.helper.make_node(**attrs)``.
    """
    attrs: dict[str, Any] = {
        "plugin_namespace": plugin_spec.PLUGIN_NAMESPACE,
        "plugin_version": plugin_spec.PLUGIN_VERSION,
    }
    if aot:
        attrs["aot"] = 1  # ONNX has no bool attribute type; TensorRT reads an INT
    if op_type in _NORM_OPS:
        if epsilon is None or not epsilon > 0:
            raise ConfigError(f"{op_type} needs a positive epsilon attribute, got {epsilon!r}")
        attrs["epsilon"] = float(epsilon)
    elif op_type == plugin_spec.PER_TOKEN_QUANT:
        if epsilon is not None:
            raise ConfigError(
                f"{op_type} takes no epsilon (got {epsilon!r}); did you mean RMSNormPerTokenQuant?"
            )
    else:
        raise ConfigError(
            f"no sq_trt plugin is named {op_type!r}; expected one of "
            f"{[plugin_spec.PER_TOKEN_QUANT, *_NORM_OPS]}"
        )
    return attrs
