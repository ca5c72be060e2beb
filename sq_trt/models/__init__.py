"""Model loading and the architecture registry."""

from sq_trt.models.registry import (
    ArchSpec,
    SmoothGroup,
    find_spec,
    quantizable_linears,
    smoothing_groups,
    supported_architectures,
)

__all__ = [
    "ArchSpec",
    "SmoothGroup",
    "find_spec",
    "quantizable_linears",
    "smoothing_groups",
    "supported_architectures",
]
