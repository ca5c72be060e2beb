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

Node ``W8A8Gemm`` (domain ``sq_trt``), the fused INT8 GEMM of one quantized linear, fed by one of the
quantization nodes above (so a norm -> linears group quantizes its activation once):
    inputs ``x_q`` int8 ``[..., K]``, ``amax`` float16 / bfloat16 / float32 ``[..., 1]``,
    ``weight`` int8 ``[N, K]`` (initializer; row n = output channel n, as ``nn.Linear``),
    ``w_scale`` float32 ``[N]`` (initializer), ``bias`` float32 ``[N]`` (initializer; zeros when the
    linear has none); attribute ``has_bias`` (int 0/1: 0 skips reading ``bias``)
    output ``y``: ``amax``'s dtype, ``[..., N]``:
    ``acc[m, n] = sum_k int32(x_q[m, k]) * int32(weight[n, k])`` (int32 accumulation, exact),
    ``y = (float32(acc) * (float32(amax[m]) / 127)) * w_scale[n] + bias[n]`` in float32, then cast
    (:func:`sq_trt.quant.reference.w8a8_gemm` is the definition).

Node ``QuantW8A8Gemm`` (domain ``sq_trt``), the same GEMM quantizing its own float input per token:
    inputs ``x`` float16 / bfloat16 / float32 ``[..., K]``, ``smooth`` float32 ``[K]`` (initializer;
    ones when unused), ``weight``, ``w_scale``, ``bias`` as above; attributes ``has_smooth``,
    ``has_bias`` (int 0/1)
    output ``y``: ``x``'s dtype, ``[..., N]``: ``xs = float32(x) * smooth`` (when ``has_smooth``),
    ``(x_q, amax) = quantize_per_token(xs)``, then ``W8A8Gemm``'s formula
    (:func:`sq_trt.quant.reference.quant_w8a8_gemm`).
"""

from __future__ import annotations

ONNX_DOMAIN = "sq_trt"
PLUGIN_NAMESPACE = "sq_trt"
PLUGIN_VERSION = "1"
PER_TOKEN_QUANT = "PerTokenQuant"
RMSNORM_PER_TOKEN_QUANT = "RMSNormPerTokenQuant"
LAYERNORM_PER_TOKEN_QUANT = "LayerNormPerTokenQuant"
W8A8_GEMM = "W8A8Gemm"
QUANT_W8A8_GEMM = "QuantW8A8Gemm"
# Scale of the DequantizeLinear that follows the plugin's int8 output: x_q/127 stays
# in [-1, 1], so the fp16 GEMM output cannot overflow before the Mul by amax.
DQ_SCALE = 1.0 / 127.0
