"""`sq-trt generate`'s settings: every numeric flag bounded, before any model or graph is opened."""

from __future__ import annotations

from pydantic import Field, field_validator

from sq_trt.stage_config import StageConfig

# Below this a temperature divides logits past float32's range (a denormal gives inf, then NaN).
MIN_TEMPERATURE = 1e-4
# The largest context any supported model has is far below this; a larger value only allocates.
MAX_CONTEXT = 1 << 20


class GenerateOptions(StageConfig):
    """Decoding and runtime settings of ``sq-trt generate`` (the context is checked against the model too)."""

    max_context: int | None = Field(
        default=None,
        ge=1,
        le=MAX_CONTEXT,
        description="context in tokens (default: the model's max positions from the manifest, or the "
        "engine's profile); at most the model's positions",
    )
    threads: int | None = Field(default=None, ge=1, le=1024, description="ONNX Runtime intra-op threads")
    max_new_tokens: int = Field(
        default=32, ge=1, le=MAX_CONTEXT, description="tokens to generate (default 32)"
    )
    temperature: float = Field(
        default=0.0,
        ge=0.0,
        le=100.0,
        allow_inf_nan=False,
        description=f"0 = greedy (default); otherwise in [{MIN_TEMPERATURE:g}, 100]",
    )
    top_k: int = Field(default=0, ge=0, le=1 << 24, description="sample among the k most likely (0 = all)")
    top_p: float = Field(
        default=1.0, gt=0.0, le=1.0, allow_inf_nan=False, description="nucleus sampling mass (1.0 = all)"
    )
    seed: int = Field(default=0, ge=0, le=2**63 - 1, description="sampler seed (default 0)")

    @field_validator("temperature")
    @classmethod
    def _not_tiny(cls, value: float) -> float:
        if 0.0 < value < MIN_TEMPERATURE:
            raise ValueError(
                f"must be 0 (greedy) or at least {MIN_TEMPERATURE:g}: smaller values overflow the logits"
            )
        return value


def check_context(max_context: int | None, positions: int | None, where: str) -> None:
    """Refuse a context past the model's positions, before any arena is allocated.

    Raises:
        ConfigError: Naming both numbers.
    """
    from sq_trt.errors import ConfigError

    if max_context is not None and positions is not None and max_context > positions:
        raise ConfigError(
            f"--max-context {max_context} is past the {positions} positions of {where}; "
            f"use --max-context <= {positions}"
        )
