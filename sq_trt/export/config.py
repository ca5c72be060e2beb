"""The export stage's configuration, shared by ``sq-trt export`` and the recipe's ``export`` section.

:class:`ExportConfig` is what :func:`sq_trt.export.stage.export_model` takes. The
recipe splits it in two: the per-candidate fields (:class:`CandidateOptions`:
activation mode, encoding, O3) live in each ``export.candidates`` entry, the
graph-wide ones (:class:`GraphOptions`) in the ``export`` section; both are the
classes below, so a bound (the opset range) is written once and a recipe value
the exporter would refuse fails when the recipe is loaded.
"""

from __future__ import annotations

from typing import Literal, cast

from pydantic import Field, field_validator, model_validator

from sq_trt.stage_config import PlanActMode, StageConfig

DEFAULT_OPSET = 20
MIN_OPSET = 19  # float16 DequantizeLinear scales need opset 19
MAX_OPSET = 22  # the newest opset TensorRT's ONNX parser supports
EncodingChoice = Literal["auto", "portable", "plugin", "fused-gemm"]
INT8_DTYPES = ("float16", "float32")


Encoding = Literal["portable", "plugin", "fused-gemm"]


def resolve_encoding(encoding: str, act_mode: str, *, plugins: bool) -> Encoding:
    """The concrete per-token encoding of ``auto``: ``fused-gemm`` where the engine builder hosts plugins.

    Args:
        encoding: The configured encoding (``auto`` or a concrete one, returned as is).
        act_mode: ``per_tensor`` graphs are standard Q/DQ; the encoding is not used (``portable``).
        plugins: Whether this run's engine builder hosts the sq-trt plugins (TensorRT proper).
    """
    if encoding in ("portable", "plugin", "fused-gemm"):
        return cast(Encoding, encoding)
    if act_mode == "per_tensor":
        return "portable"
    return "fused-gemm" if plugins else "portable"


class CandidateOptions(StageConfig):
    """What differs between INT8 candidates of one model."""

    act_mode: PlanActMode = Field(
        default="per_token",
        description="activation quantization: per_token (dynamic, at run time), per_tensor (static, calibrated) "
        "or hybrid (each linear as the smoothed artifact's measured quant_plan.json says: static Q/DQ, "
        "TensorRT's native INT8, wherever it is safe, per token where outlier tokens live)",
    )
    encoding: EncodingChoice = Field(
        default="auto",
        description="per-token encoding: auto (fused-gemm when TensorRT proper builds the engines, else "
        "portable), portable (standard ONNX ops; ONNX Runtime, TensorRT-RTX), fused-gemm (one sq_trt W8A8 "
        "GEMM node per linear; TensorRT proper) or plugin (sq_trt::PerTokenQuant before a Q/DQ MatMul; "
        "TensorRT proper)",
        json_schema_extra={"cli": "--per-token-encoding"},
    )
    quantize_bmm: bool = Field(
        default=False,
        description="also quantize the attention BMM inputs with static per-tensor scales (the paper's O3; "
        "Llama family; costs accuracy, see docs/benchmarks/export.md)",
    )

    @model_validator(mode="after")
    def _encoding_needs_per_token(self) -> CandidateOptions:
        if self.act_mode == "per_tensor" and self.encoding not in ("auto", "portable"):
            raise ValueError(
                f"encoding {self.encoding!r} is per-token only; a per_tensor candidate uses standard Q/DQ "
                "(drop `encoding` or set act_mode: per_token)"
            )
        return self


class GraphOptions(StageConfig):
    """What every candidate of one export shares."""

    exclude: tuple[str, ...] = Field(
        default=(),
        description="fnmatch patterns of full module names of linears kept in floating point "
        "(e.g. 'model.layers.0.*' '*.down_proj')",
        json_schema_extra={"metavar": "GLOB"},
    )
    opset: int = Field(
        default=DEFAULT_OPSET,
        ge=MIN_OPSET,
        le=MAX_OPSET,
        description=f"ONNX opset, {MIN_OPSET}..{MAX_OPSET} (float16 DequantizeLinear scales need "
        f"{MIN_OPSET}; TensorRT's parser supports up to {MAX_OPSET})",
    )
    int8_dtype: Literal["float16", "float32"] = Field(
        default="float16",
        description="activation dtype of model.int8.onnx (float16 to deploy; float32 to compare "
        "bit-for-bit with the PyTorch reference)",
    )
    with_past: bool = Field(
        default=False, description="export generation graphs with a KV cache (prefill + decode)"
    )

    @field_validator("exclude", mode="before")
    @classmethod
    def _patterns(cls, value: object) -> object:
        return tuple(value) if isinstance(value, list) else value


class ExportConfig(CandidateOptions, GraphOptions):
    """How to export one model (see :func:`sq_trt.export.stage.export_model`).

    ``encoding="auto"`` is resolved by the caller with :func:`resolve_encoding` (the
    exporter itself resolves it for a machine with TensorRT proper and a GPU).
    """

    @model_validator(mode="after")
    def _no_bmm_with_past(self) -> ExportConfig:
        if self.with_past and self.quantize_bmm:
            raise ValueError(
                "quantize_bmm is not supported with with_past yet (the BMM rewrite matches the graph "
                "without a cache); drop one of them"
            )
        return self
