"""The accuracy report (stage ``report``): one HTML page, a Markdown summary and a JSON file.

:func:`write_report` reads a compare artifact and writes, atomically, a report
directory with ``report.html`` (self-contained: plots embedded as base64 PNG),
``report.md``, ``report.json`` (verdict first) and ``plots/*.png``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sq_trt.artifacts import artifact_dir, atomic_write_bytes, atomic_write_text, hash_file
from sq_trt.errors import ArtifactError, ConfigError
from sq_trt.report.content import ActivationPicture, Report, assemble, pick_outlier_layer

if TYPE_CHECKING:
    from sq_trt.compare.gate import GateVerdict

STAGE = "report"
LAYERS_FILE = "layers.json"
REPORT_FILE = "report.json"

__all__ = ["ActivationPicture", "Report", "activation_picture", "load_sweep", "write_report"]


def load_sweep(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read an alpha-sweep JSON file.

    Format: ``{"metric": "ppl", "baseline": 12.05, "points": [{"alpha": 0.5, "ppl": 12.3}, ...]}``
    (``baseline`` optional), or a bare list of points (metric ``ppl``).

    Raises:
        ConfigError: Missing file, invalid JSON, or points without ``alpha`` and the metric.
    """
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"sweep file {path} does not exist") from exc
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ConfigError(f"sweep file {path} is not valid JSON ({str(exc)[:100]})") from exc
    except OSError as exc:
        raise ConfigError(f"sweep file {path} cannot be read ({exc.strerror or exc})") from exc
    sweep = {"metric": "ppl", "points": raw} if isinstance(raw, list) else raw
    if not isinstance(sweep, dict) or not isinstance(sweep.get("points"), list) or not sweep["points"]:
        raise ConfigError(f"sweep file {path}: expected {{'metric', 'points': [{{'alpha', <metric>}}, ...]}}")
    metric = sweep.get("metric", "ppl")
    if not isinstance(metric, str):
        raise ConfigError(f"sweep file {path}: 'metric' must be a name such as 'ppl', got {str(metric)[:40]!r}")
    for point in sweep["points"]:
        if (
            not isinstance(point, dict)
            or not {"alpha", metric} <= set(point)
            or not all(_is_number(point[key]) for key in ("alpha", metric))
        ):
            raise ConfigError(
                f"sweep file {path}: every point needs numbers 'alpha' and {metric!r}, got {str(point)[:80]}"
            )
    return {"metric": metric, "points": sweep["points"], "baseline": sweep.get("baseline")}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def activation_picture(
    calibration_dir: str | os.PathLike[str], smoothed_dir: str | os.PathLike[str], layer: str | None = None
) -> ActivationPicture:
    """Per-channel input amax of one linear from the calibration artifact and the smoothed artifact.

    Args:
        calibration_dir: The ``calibrate`` artifact (statistics of the original model).
        smoothed_dir: The ``smooth`` artifact (statistics of the smoothed model).
        layer: The linear to show; default: of the linears smoothing changed, the one with
            the largest max/median channel ratio.
    """
    from sq_trt.artifacts import load_act_scales, load_manifest, read_scales_file

    calibration = load_act_scales(calibration_dir)
    smoothed_meta = dict(load_manifest(smoothed_dir, stage="smooth", verify_files=True).extra)
    source = smoothed_meta.get("source_model_fingerprint")
    if source and calibration.meta.get("model_fingerprint") and source != calibration.meta["model_fingerprint"]:
        raise ArtifactError(
            f"{smoothed_dir} smoothed model {source}, but {calibration_dir} was calibrated on "
            f"{calibration.meta['model_fingerprint']}: the two artifacts are of different models; "
            "pass the calibration the smoothed artifact was made from"
        )
    before = calibration.input_channel_amax
    after = read_scales_file(smoothed_dir, smoothed_meta).input_channel_amax
    common = [name for name in before if name in after and before[name].shape == after[name].shape]
    if not common:
        raise ArtifactError(
            f"{calibration_dir} and {smoothed_dir} share no linears of the same width; "
            "are they of the same model?"
        )
    name = layer or pick_outlier_layer(
        {n: before[n].float().numpy() for n in common}, after={n: after[n].float().numpy() for n in common}
    )
    if name not in common:
        raise ConfigError(f"layer {name!r} has no statistics in both artifacts; e.g. {common[0]!r}")
    return ActivationPicture(name, before[name].float().numpy(), after[name].float().numpy())


def _verdict(comparison: Mapping[str, Any], conditions: list[str], where: str | os.PathLike[str]) -> dict[str, Any]:
    """The verdict of gate ``conditions`` on a (verified) comparison's metrics, as JSON.

    Raises:
        ArtifactError: Malformed metrics, or conditions naming what the comparison lacks.
    """
    from sq_trt.compare.gate import comparison_verdict

    try:
        verdict: dict[str, Any] = comparison_verdict(comparison, conditions).to_json()
    except (KeyError, TypeError, ConfigError) as exc:
        raise ArtifactError(
            f"{where}: the metrics or gate conditions of comparison.json are malformed ({exc}); "
            "rerun `sq-trt compare`"
        ) from exc
    return verdict


def _stored_verdict(comparison: Mapping[str, Any], where: str | os.PathLike[str]) -> dict[str, Any]:
    """The comparison's own gate, recomputed; its stored verdict must agree.

    A disagreement means ``comparison.json`` was edited (and its manifest re-hashed), so the
    artifact is refused rather than trusting either value.

    Raises:
        ArtifactError: Malformed conditions or metrics, or a stored verdict that differs.
    """
    conditions = comparison.get("gate_conditions", [])
    if not isinstance(conditions, list) or not all(isinstance(c, str) for c in conditions):
        raise ArtifactError(f"{where}: 'gate_conditions' is not a list of strings; rerun `sq-trt compare`")
    verdict = _verdict(comparison, conditions, where)
    stored = comparison.get("gate")
    if not isinstance(stored, dict) or stored.get("passed") is not verdict["passed"]:
        stored_passed = stored.get("passed") if isinstance(stored, dict) else stored
        raise ArtifactError(
            f"{where}: comparison.json records gate passed={stored_passed!r}, but its metrics and conditions "
            f"give passed={verdict['passed']}; the file was edited. Rerun `sq-trt compare`"
        )
    return verdict


def load_verdict(report_dir: str | os.PathLike[str]) -> GateVerdict:
    """The gate verdict a report artifact states (``report.json``, checked against its manifest).

    Raises:
        ArtifactError: No report artifact there, a file that does not match its manifest, or
            a ``report.json`` without a verdict.
    """
    from sq_trt.artifacts import load_manifest, verify_manifest_files
    from sq_trt.compare.gate import GateVerdict

    verify_manifest_files(report_dir, load_manifest(report_dir, stage=STAGE), [REPORT_FILE])
    path = Path(report_dir) / REPORT_FILE
    try:
        return GateVerdict.from_json(json.loads(path.read_text())["verdict"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{path} holds no gate verdict ({exc}); rerun `sq-trt report`") from exc


def write_report(
    results_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    activation: ActivationPicture | None = None,
    sweep: Mapping[str, Any] | None = None,
    gate: list[str] | None = None,
    force: bool = True,
) -> Report:
    """Write the report of one compare artifact.

    Args:
        results_dir: The ``compare`` artifact directory (with ``comparison.json``,
            and ``layers.json`` when layers were ranked).
        out_dir: The report directory to write (atomically).
        activation: The SmoothQuant picture's data (optional).
        sweep: Alpha sweep (:func:`load_sweep`), optional.
        gate: The gate conditions this report applies to the verified metrics (``None``: the
            comparison's own, whose stored verdict must then agree). The pipeline passes its
            recipe's gate, so a gate change reruns only the report.
        force: Replace an existing report directory.

    Returns:
        The report content.
    """
    from sq_trt.artifacts.comparison import COMPARISON_FILE, load_comparison
    from sq_trt.report.html import render_html
    from sq_trt.report.markdown import render_markdown

    # Every file read below is checked against the manifest, and the verdict is recomputed
    # from the (verified) metrics and gate conditions: a stored boolean decides nothing.
    comparison = load_comparison(results_dir, verify_files=True)
    if gate is None:
        comparison["gate"] = _stored_verdict(comparison, results_dir)
    else:
        from sq_trt.compare.gate import Gate

        Gate.parse(list(gate))  # a malformed condition is the caller's error, not the artifact's
        comparison["gate_conditions"] = list(gate)
        comparison["gate"] = _verdict(comparison, list(gate), results_dir)
    layers_path = Path(results_dir) / LAYERS_FILE
    layers = None
    if layers_path.is_file():
        from sq_trt.artifacts import load_manifest, verify_manifest_files

        # Only a ranking the compare run wrote (listed, hash checked): never a file dropped in later.
        verify_manifest_files(results_dir, load_manifest(results_dir), [LAYERS_FILE])
        try:
            layers = json.loads(layers_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArtifactError(
                f"{layers_path} is not valid JSON ({exc}); rerun compare --rank-layers"
            ) from exc
        if not isinstance(layers, dict) or not isinstance(layers.get("layers"), list):
            raise ArtifactError(
                f"{layers_path} holds no 'layers' list; it is malformed. Rerun compare --rank-layers"
            )
    report = assemble(comparison, layers=layers, activation=activation, sweep=sweep)
    inputs = {"comparison": hash_file(Path(results_dir) / COMPARISON_FILE)}
    with artifact_dir(
        out_dir,
        stage=STAGE,
        inputs=inputs,
        extra={"passed": report.verdict.get("passed"), "gate_conditions": comparison.get("gate_conditions", [])},
        force=force,
    ) as tmp:
        for plot in report.plots:
            atomic_write_bytes(tmp / "plots" / plot.filename, plot.png)
        atomic_write_text(tmp / REPORT_FILE, json.dumps(report.to_json(), indent=2, default=str) + "\n")
        atomic_write_text(tmp / "report.md", render_markdown(report))
        atomic_write_text(tmp / "report.html", render_html(report))
    return report
