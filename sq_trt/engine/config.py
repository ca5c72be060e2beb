"""The build stage's options, shared by build recipes / ``sq-trt build``'s flags and the pipeline recipe.

:class:`BuildOptions` is what both set; :class:`sq_trt.engine.recipe.BuildSettings`
adds what one build names (its ONNX file, engine name and target), and the pipeline
recipe's ``build`` section adds what a multi-engine run decides (``backend: none``,
the FP16 baseline engine). ``sq-trt build``'s flags are generated from these fields
(:func:`sq_trt.commands.common.add_config_args` with ``unset=True``: it merges its flags over
a build recipe, so a flag left out keeps the recipe's value); a field whose flag has another
form (``profiles``: ``--batch``/``--seq``) names it in ``json_schema_extra``, and
``tests/unit/test_stage_configs.py`` checks that every one exists.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sq_trt.engine.profiles import ProfileSpec
from sq_trt.stage_config import StageConfig


class GenerationLimits(BaseModel):
    """Shapes of a generation engine (a ``--with-past`` export): its two optimization profiles.

    Attributes:
        max_batch: Sequences decoded together.
        max_input: Longest prompt one prefill step takes.
        max_context: Prompt + generated tokens, at most (the KV cache's length).
    """

    model_config = ConfigDict(extra="forbid")

    max_batch: int = Field(default=1, ge=1, le=4096, description="sequences per step")
    max_input: int = Field(default=256, ge=1, le=1 << 20, description="longest prompt of one prefill step")
    max_context: int = Field(
        default=1024, ge=2, le=1 << 20, description="prompt + generated tokens (KV cache length, <= the positions)"
    )

    @model_validator(mode="after")
    def _input_fits(self) -> GenerationLimits:
        if self.max_input >= self.max_context:
            raise ValueError(
                f"max_input ({self.max_input}) must be below max_context ({self.max_context}): "
                "decoding needs room after the prompt"
            )
        return self

    def profiles(self) -> list[ProfileSpec]:
        """``prefill`` (1..max_input tokens, past 0..max_context - max_input) and ``decode`` (1 token, past 1..).

        TensorRT times every tactic (the GEMM plugins' tiles included) at a profile's *opt* shape and
        keeps one per profile, so each opt is the regime its profile runs: prefill at the longest
        prompt (GEMM M = max_input tokens, where prefill time goes), decode with every sequence of
        the batch stepping at once (M = max_batch, 1-8 tokens: the small-M tiles).
        """
        prefill_past = self.max_context - self.max_input
        return [
            ProfileSpec(
                name="prefill",
                batch=(1, 1, self.max_batch),
                seq=(1, self.max_input, self.max_input),
                past=(0, 0, prefill_past),
            ),
            ProfileSpec(
                name="decode",
                batch=(1, self.max_batch, self.max_batch),
                seq=(1, 1, 1),
                past=(1, max(1, self.max_context // 2), self.max_context - 1),
            ),
        ]


class BuildOptions(StageConfig):
    """How engines are built (the same for every engine of a pipeline run)."""

    profiles: list[ProfileSpec] = Field(
        default_factory=lambda: [ProfileSpec()],
        min_length=1,
        description="optimization profiles (batch: [min, opt, max], seq: [min, opt, max])",
        json_schema_extra={"cli": "--batch --seq"},
    )
    opt_level: int = Field(default=3, ge=0, le=5, description="builder optimization level (0-5)")
    workspace_mb: int | None = Field(
        default=None, ge=1, description="workspace memory-pool limit in MiB (none: TensorRT's default)"
    )
    timing_cache: Path | None = Field(
        default=None, description="timing cache file to load and update (TensorRT proper)"
    )
    compute_capabilities: list[str] = Field(
        default_factory=list,
        description="TensorRT-RTX GPU targets, e.g. [8.6, 8.9] (empty: its default set); "
        "repeatable on the command line",
        json_schema_extra={"cli": "--compute-capability", "metavar": "X.Y"},
    )
    generation: GenerationLimits | None = Field(
        default=None,
        description="for a generation graph (export --with-past): max batch / input / context, whose prefill "
        "and decode profiles replace `profiles`",
        json_schema_extra={"cli": "--max-batch --max-input --max-context"},
    )
