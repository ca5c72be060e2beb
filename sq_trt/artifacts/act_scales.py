"""The activation scales: the calibrate stage's statistics, in memory and as an artifact.

:class:`ActScales` (read by smooth, export, the report, the pipeline and the
fake-quantized reference), its file and its artifact directory
(:func:`save_act_scales`, :func:`load_act_scales`) live here rather than in
:mod:`sq_trt.calibrate`, so a stage that reads them imports no other stage.
Smoothing factors travel as :class:`sq_trt.smooth.stage.SmoothResult`'s ``factors``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sq_trt.artifacts.manifest import artifact_dir, load_manifest
from sq_trt.errors import ArtifactError

if TYPE_CHECKING:
    import torch

# The stage that writes the act_scales artifact (its manifest's `stage`).
CALIBRATE_STAGE = "calibrate"
SCALES_FILE = "act_scales.safetensors"
_KEYS = ("input_channel_amax", "input_amax", "output_amax", "output_channel_amax", "bmm_amax")


@dataclass
class ActScales:
    """Activation statistics of every quantized linear, keyed by full module name.

    Attributes:
        input_channel_amax: Name -> float32 ``[in_features]`` per-channel max ``|X|``.
        input_amax: Name -> float32 0-dim per-tensor max ``|X|``.
        output_amax: Name -> float32 0-dim per-tensor max ``|Y|``.
        meta: The manifest ``extra`` (model fingerprint, data, sample count, ...).
        output_channel_amax: Name -> float32 ``[out_features]`` per-channel max ``|Y|``
            (may be empty for artifacts written by other tools).
        bmm_amax: ``"<attention module>.<q|k|p>"`` -> float32 0-dim max ``|x|`` of the
            attention BMM inputs (see :mod:`sq_trt.quant.attention`; empty for families
            it does not hook and for older artifacts).
    """

    input_channel_amax: dict[str, torch.Tensor]
    input_amax: dict[str, torch.Tensor]
    output_amax: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)
    output_channel_amax: dict[str, torch.Tensor] = field(default_factory=dict)
    bmm_amax: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def linears(self) -> list[str]:
        """Names of the linears covered, in insertion order."""
        return list(self.input_channel_amax)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """Flat ``{L.key: tensor}`` mapping, as stored in ``act_scales.safetensors``."""
        flat: dict[str, torch.Tensor] = {}
        for key in _KEYS:
            for name, tensor in getattr(self, key).items():
                flat[f"{name}.{key}"] = tensor.detach().float().cpu().contiguous()
        return flat

    @classmethod
    def from_tensors(cls, flat: Mapping[str, torch.Tensor], meta: dict[str, Any]) -> ActScales:
        """Inverse of :meth:`to_tensors`."""
        tables: dict[str, dict[str, torch.Tensor]] = {key: {} for key in _KEYS}
        for flat_name, tensor in flat.items():
            name, _, key = flat_name.rpartition(".")
            if key not in tables:
                raise ArtifactError(
                    f"unexpected tensor {flat_name!r} in {SCALES_FILE}; expected <linear>.{_KEYS}"
                )
            _check_statistic(flat_name, tensor)
            tables[key][name] = tensor
        return cls(
            tables["input_channel_amax"],
            tables["input_amax"],
            tables["output_amax"],
            meta,
            tables["output_channel_amax"],
            tables["bmm_amax"],
        )


def _check_statistic(name: str, tensor: torch.Tensor) -> None:
    """Refuse a NaN, infinite or negative range: it would become a scale of 1, 0 or inf downstream."""
    import torch
    if not tensor.is_floating_point():
        raise ArtifactError(f"{SCALES_FILE}: {name} has dtype {tensor.dtype}, expected a float tensor")
    values = tensor.float()
    bad = ~torch.isfinite(values) | (values < 0)
    if bool(bad.any()):
        first = values[bad].flatten()[0].item()
        raise ArtifactError(
            f"{SCALES_FILE}: {name} holds {int(bad.sum())} non-finite or negative values (first: {first}); "
            "the statistics are corrupt. Rerun `sq-trt calibrate` (check the model's activations for NaN/inf)"
        )


def write_scales_file(directory: str | os.PathLike[str], scales: ActScales) -> Path:
    """Write ``act_scales.safetensors`` into ``directory`` (no manifest; see :func:`save_act_scales`)."""
    from safetensors.torch import save_file

    path = Path(directory) / SCALES_FILE
    save_file(scales.to_tensors(), str(path))
    return path


def read_scales_file(directory: str | os.PathLike[str], meta: dict[str, Any]) -> ActScales:
    """Read ``act_scales.safetensors`` from an artifact directory whose manifest is already checked."""
    path = Path(directory) / SCALES_FILE
    if not path.is_file():
        raise ArtifactError(f"{directory} has no {SCALES_FILE}; rerun `sq-trt calibrate`")
    return ActScales.from_tensors(read_safetensors(path), meta)


def read_safetensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load a ``.safetensors`` file, turning a corrupt header or truncated body into one line.

    Raises:
        ArtifactError: The file cannot be parsed.
    """
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises SafetensorError / OSError / ValueError on corrupt input
        raise ArtifactError(
            f"{path} is not a readable safetensors file ({type(exc).__name__}: {str(exc)[:100]}); "
            "rerun the stage that wrote it"
        ) from exc


def check_model_matches(scales: ActScales, model: Any, where: str) -> None:
    """Refuse statistics recorded on another model.

    Raises:
        ArtifactError: Fingerprints differ (both named) or linears are missing.
    """
    from sq_trt.models.loading import weights_fingerprint
    from sq_trt.models.registry import quantizable_linears

    expected = scales.meta.get("model_fingerprint")
    actual = weights_fingerprint(model)
    if expected != actual:
        raise ArtifactError(
            f"{where} was calibrated on model {expected} ({scales.meta.get('model_source')!r}), but the model "
            f"given has weights {actual}; calibrate this model (sq-trt calibrate) or pass the matching --model"
        )
    missing = [name for name in quantizable_linears(model) if name not in scales.input_channel_amax]
    if missing:
        raise ArtifactError(f"{where} has no statistics for {len(missing)} linears (first: {missing[0]})")


def save_act_scales(path: str | os.PathLike[str], scales: ActScales, *, force: bool = False) -> Path:
    """Write an ``act_scales`` artifact directory (stage ``calibrate``).

    Args:
        path: Output directory (written atomically).
        scales: The statistics; ``scales.meta`` becomes the manifest ``extra``.
        force: Replace an existing directory.

    Returns:
        The artifact directory.
    """
    meta = dict(scales.meta)
    config: dict[str, Any] = {key: meta[key] for key in ("num_samples", "seq_len") if key in meta}
    inputs = {"model": meta.get("model_fingerprint", "")}
    if "data" in meta:
        inputs["data"] = meta["data"].get("text_hash", "")
    with artifact_dir(path, stage=CALIBRATE_STAGE, config=config, inputs=inputs, extra=meta, force=force) as tmp:
        write_scales_file(tmp, scales)
    return Path(path)


def load_act_scales(path: str | os.PathLike[str], *, model: Any = None) -> ActScales:
    """Load an ``act_scales`` artifact, checking its manifest and file hashes.

    Args:
        path: The artifact directory written by :func:`save_act_scales`.
        model: If given, refuse statistics recorded on a model with other weights.

    Returns:
        The statistics, ``meta`` = the manifest ``extra``.

    Raises:
        ArtifactError: Missing/corrupt artifact, another stage, or another model.
    """
    manifest = load_manifest(path, stage=CALIBRATE_STAGE, verify_files=True)
    scales = read_scales_file(path, dict(manifest.extra))
    if model is not None:
        check_model_matches(scales, model, f"act_scales artifact {path}")
    return scales
