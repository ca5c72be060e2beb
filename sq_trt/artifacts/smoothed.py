"""The smoothed artifact: a checkpoint of the smoothed model, its factors and its activation scales.

Written by the smooth stage (:func:`sq_trt.smooth.stage.save_smoothed`); read by export,
compare and the pipeline through :func:`load_smoothed`, so none of them imports the
smooth stage.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from sq_trt.artifacts.act_scales import ActScales, check_model_matches, read_scales_file
from sq_trt.artifacts.manifest import load_manifest

if TYPE_CHECKING:
    from sq_trt.models.loading import LoadedModel

# The stage that writes the smoothed artifact (its manifest's `stage`).
SMOOTH_STAGE = "smooth"
# The per-channel factors, kept for inspection: every consumer reads the folded weights.
FACTORS_FILE = "smoothing.safetensors"


def load_smoothed(path: str | os.PathLike[str], *, device: str = "cpu") -> tuple[LoadedModel, ActScales]:
    """Load a smoothed artifact: the model (weights checked against the manifest) and its statistics.

    Raises:
        ArtifactError: Missing/corrupt artifact, wrong stage, or weights that do not
            match the manifest's fingerprint.
    """
    from sq_trt.models.loading import load_model

    manifest = load_manifest(path, stage=SMOOTH_STAGE, verify_files=True)
    scales = read_scales_file(path, dict(manifest.extra))  # the cheap check first, then the model
    loaded = load_model(str(Path(path).resolve()), local_files_only=True, device=device)
    check_model_matches(scales, loaded.model, f"smoothed artifact {path}")
    return loaded, scales
