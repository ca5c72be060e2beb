"""The compare stage's options, shared by ``sq-trt compare``'s flags and the recipe's ``compare`` section.

:class:`CompareOptions` holds what both set (how much held-out text, the
layer ranking's size, generation accuracy); :class:`sq_trt.compare.stage.CompareConfig`
adds what one run compares (runners, data source, output).
"""

from __future__ import annotations

from pydantic import Field

from sq_trt.stage_config import StageConfig


class CompareOptions(StageConfig):
    """How much held-out text each runner sees, and what else is measured."""

    samples: int = Field(default=32, ge=1, description="held-out samples (never from the calibration slice)")
    seq_len: int = Field(default=512, ge=2, description="tokens per sample (the engine's sequence length)")
    batch_size: int = Field(default=1, ge=1, description="samples per inference call")
    save_iterations: int = Field(
        default=1, ge=-1, description="batches whose full outputs are saved as Polygraphy JSON (-1: all)"
    )
    rank_samples: int = Field(default=2, ge=1, description="samples used by the per-layer ranking")
    rank_seq_len: int = Field(default=256, ge=2, description="tokens per per-layer ranking sample")
    generation_prompts: int = Field(
        default=0,
        ge=0,
        description="held-out prompts to generate from greedily with baseline and candidates (0: off; needs "
        "generation graphs, export --with-past); adds exact_match_rate, mean_first_divergence and "
        "teacher_forced_top1",
        json_schema_extra={"metavar": "N"},
    )
    generation_prompt_tokens: int = Field(default=32, ge=1, description="tokens per generation prompt")
    generation_tokens: int = Field(default=32, ge=1, description="greedy tokens generated per prompt")
