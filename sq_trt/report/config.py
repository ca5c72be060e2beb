"""The report stage's options: ``sq-trt report``'s flags and the recipe's ``report`` section."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from sq_trt.stage_config import StageConfig


class ReportOptions(StageConfig):
    """What the report shows beyond the comparison."""

    activation_layer: str | None = Field(
        default=None,
        description="linear shown in the SmoothQuant picture (default: the one with the strongest outlier "
        "channels)",
        json_schema_extra={"cli": "--act-layer", "metavar": "NAME"},
    )
    sweep: Path | None = Field(
        default=None, description="alpha-sweep JSON file to plot (optional)", json_schema_extra={"metavar": "FILE"}
    )
