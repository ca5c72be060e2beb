"""The contract between the ONNX exporter, the TensorRT plugin and the CPU executor.

The exporter writes per-token quantization as one custom node; TensorRT's ONNX
parser maps an unknown node to a registered plugin by ``op_type`` = plugin name,
with the node attributes ``plugin_namespace`` and ``plugin_version``. The
plugin (``sq_trt.plugins``) registers under the same names, and the CPU
executor rewrites the node into standard ONNX ops with the same semantics
(:mod:`sq_trt.quant.reference`).

Node ``PerTokenQuant`` (domain ``sq_trt``):
    input ``x``: float16 / bfloat16 / float32 ``[..., K]``
    output ``x_q``: int8 ``[..., K]``, ``clamp(round_half_even(x * (127 / amax)), -127, 127)``
    output ``amax``: same dtype as ``x``, ``[..., 1]``, ``max |x|`` over the last axis

Node ``RMSNormPerTokenQuant`` (domain ``sq_trt``), the fused variant:
    inputs ``x [..., K]``, ``weight [K]``; attribute ``epsilon`` (float)
    outputs as above, of ``y = x / sqrt(mean(x^2) + epsilon) * weight``

Node ``LayerNormPerTokenQuant`` (domain ``sq_trt``), the LayerNorm fused variant:
    inputs ``x [..., K]``, ``weight [K]``, ``bias [K]``; attribute ``epsilon`` (float)
    outputs as above, of ``y = (x - mean(x)) / sqrt(var(x) + epsilon) * weight + bias``
"""

from __future__ import annotations

ONNX_DOMAIN = "sq_trt"
PLUGIN_NAMESPACE = "sq_trt"
PLUGIN_VERSION = "1"
PER_TOKEN_QUANT = "PerTokenQuant"
RMSNORM_PER_TOKEN_QUANT = "RMSNormPerTokenQuant"
LAYERNORM_PER_TOKEN_QUANT = "LayerNormPerTokenQuant"
# Scale of the DequantizeLinear that follows the plugin's int8 output: x_q/127 stays
# in [-1, 1], so the fp16 GEMM output cannot overflow before the Mul by amax.
DQ_SCALE = 1.0 / 127.0
