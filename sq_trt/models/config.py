"""Which model, and how to load it: the pipeline recipe's ``model`` section and every command's ``--model`` flags.

:class:`ModelConfig` is defined once: the recipe's ``model`` section *is* it, and the
subcommands that load a model generate their ``--model``, ``--dtype``, ``--local-files-only``,
``--trust-remote-code`` and ``--device`` flags from its fields
(:func:`sq_trt.commands.common.add_model_args`). ``offload`` and ``offload_dir`` belong to
the pipeline's layer-streaming mode only (``cli: None``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from sq_trt.stage_config import StageConfig

MODEL_HINT = "a hub id, a local model directory, a .gguf file, 'demo' or 'tiny:<family>'"


class ModelConfig(StageConfig):
    """Which model, and how to load it.

    A recipe must name its model (``source`` is required there); a subcommand's ``--model``
    defaults to the demo model (``cli_default``).
    """

    source: str = Field(
        description="hub id | local directory | .gguf file | 'demo' (SmolLM2-135M) | 'tiny:<family>'",
        json_schema_extra={"cli": "--model", "dest": "model", "cli_default": "demo"},
    )
    dtype: Literal["float32", "float16", "bfloat16"] = Field(
        default="float32", description="dtype the model is loaded in (calibration wants float32)"
    )
    local_files_only: bool = Field(default=False, description="never download; use only files already on disk")
    trust_remote_code: bool = Field(
        default=False,
        description="allow the model's own Python code to run (off by default; only for models you trust)",
    )
    device: str = Field(default="cpu", description="torch device for calibration/evaluation (cpu, cuda)")
    offload: bool = Field(
        default=False,
        description="keep at most one decoder layer on `device` at a time (accelerate's CPU/disk offload), "
        "for models larger than host or device memory (pipeline only)",
        json_schema_extra={"cli": None},
    )
    offload_dir: Path | None = Field(
        default=None,
        description="where offloaded weights go when they do not fit in host memory (none: inside the work dir)",
        json_schema_extra={"cli": None},
    )

    @field_validator("source")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError(f"must name a model: {MODEL_HINT}")
        return value
