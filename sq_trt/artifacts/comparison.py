"""On-disk form of a comparison: our metrics JSON plus Polygraphy ``RunResults``.

A compare artifact directory (stage ``compare``, with ``manifest.json``) holds:

* ``comparison.json``: the metrics of every candidate against the baseline, the
  gate verdict, error histograms, timings, the data description and the
  provenance (schema :data:`COMPARISON_SCHEMA`);
* ``iterations/<index>.json``: Polygraphy ``RunResults`` of one iteration (every
  runner's outputs) and ``iterations/<index>.inputs.json`` its feed dict, for the
  first ``save_iterations`` iterations only. Full logits are
  ``batch x seq x vocab x 4`` bytes per runner (100 MB for 512 tokens of
  SmolLM2), so keeping all 16k tokens (3.2 GB per runner) is opt-in; the metrics
  of the whole run are in ``comparison.json`` either way.

``--load-results`` reads the saved iterations back (on any machine, e.g. the
outputs of a GPU run) and recomputes the metrics from them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sq_trt.artifacts import MANIFEST_NAME, atomic_write_text, load_manifest
from sq_trt.errors import ArtifactError

COMPARISON_SCHEMA = "sq-trt.comparison/1"
COMPARISON_FILE = "comparison.json"
ITERATIONS_DIR = "iterations"
STAGE = "compare"


def iteration_paths(root: Path, index: int) -> tuple[Path, Path]:
    """``(outputs, inputs)`` file paths of one saved iteration."""
    base = root / ITERATIONS_DIR / f"{index:010d}"
    return base.with_suffix(".json"), Path(str(base) + ".inputs.json")


def save_iteration_inputs(root: Path, index: int, feed: Any) -> None:
    """Save one iteration's feed dict (Polygraphy JSON); its outputs come from :mod:`sq_trt.compare.spool`."""
    from polygraphy.json import save_json

    inputs_path = iteration_paths(root, index)[1]
    inputs_path.parent.mkdir(parents=True, exist_ok=True)
    save_json(dict(feed), str(inputs_path))


def load_iterations(root: Path) -> Iterator[tuple[dict[str, Any], Any]]:
    """Yield ``(feed_dict, RunResults)`` of each saved iteration, in order.

    Raises:
        ArtifactError: No saved iterations, a missing inputs file, or a file
            Polygraphy cannot decode.
    """
    from polygraphy.comparator import RunResults
    from polygraphy.json import load_json

    folder = root / ITERATIONS_DIR
    outputs = sorted(p for p in folder.glob("*.json") if not p.name.endswith(".inputs.json"))
    if not outputs:
        raise ArtifactError(
            f"{root} holds no saved iterations ({folder}/*.json); rerun compare with --save-iterations >= 1"
        )
    # In an artifact directory (the CLI's case; run_comparison's raw save_dir has no manifest yet)
    # only files its manifest lists are evidence of the run.
    listed = load_manifest(root, stage=STAGE).files if (root / MANIFEST_NAME).is_file() else None
    for path in sorted(folder.glob("*.json")) if listed is not None else []:
        rel = path.relative_to(root).as_posix()
        if listed is not None and rel not in listed:
            # A file added after the run (e.g. another run's outputs copied in) is not evidence of this run.
            raise ArtifactError(
                f"{path} is not listed in {root}'s manifest; it was not written by this comparison. "
                "Remove it or rerun compare"
            )
    for path in outputs:
        inputs_path = Path(str(path.with_suffix("")) + ".inputs.json")
        if not inputs_path.is_file():
            raise ArtifactError(
                f"{path} has no matching inputs file {inputs_path.name}; the results are incomplete"
            )
        try:
            run_results = RunResults.load(str(path))
            feed = load_json(str(inputs_path))
        except Exception as exc:  # Polygraphy raises PolygraphyException / JSON errors for corrupt files
            raise ArtifactError(
                f"could not read saved Polygraphy results {path}: {exc}; the file is corrupt or not a RunResults. "
                "Rerun compare to write it again"
            ) from exc
        if not isinstance(run_results, RunResults) or not isinstance(feed, dict):
            raise ArtifactError(
                f"{path}: expected a Polygraphy RunResults and a feed dict, got {type(run_results).__name__}"
            )
        yield feed, run_results


def write_comparison(root: Path, comparison: dict[str, Any]) -> Path:
    """Write ``comparison.json`` (atomic)."""
    comparison = {"schema": COMPARISON_SCHEMA, **comparison}
    return atomic_write_text(
        root / COMPARISON_FILE, json.dumps(comparison, indent=2, sort_keys=False, default=_jsonable) + "\n"
    )


def load_comparison(root: str | os.PathLike[str], *, verify_files: bool = False) -> dict[str, Any]:
    """Read and validate a compare artifact's ``comparison.json``.

    Args:
        root: The compare output directory.
        verify_files: Re-hash the artifact's files against its manifest.

    Raises:
        ArtifactError: Not a compare artifact, corrupt JSON, another schema, or
            missing required fields.
    """
    root = Path(root)
    load_manifest(root, stage=STAGE, verify_files=verify_files)
    path = root / COMPARISON_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ArtifactError(f"{root} has no {COMPARISON_FILE}; rerun `sq-trt compare`") from exc
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ArtifactError(f"{path} is not valid JSON ({str(exc)[:120]}); rerun `sq-trt compare`") from exc
    if not isinstance(data, dict) or data.get("schema") != COMPARISON_SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise ArtifactError(
            f"{path} has schema {found!r}, expected {COMPARISON_SCHEMA!r}; rerun `sq-trt compare` with this sq-trt"
        )
    for key in ("baseline", "candidates", "metrics", "gate", "data"):
        if key not in data:
            raise ArtifactError(f"{path} lacks the field {key!r}; it is incomplete. Rerun `sq-trt compare`")
    _check_types(data, path)
    return data


def _check_types(data: dict[str, Any], path: Path) -> None:
    """Refuse fields of the wrong JSON type (a hand-edited or truncated file) with one line."""
    for key in ("baseline", "metrics", "gate", "data"):
        if not isinstance(data[key], dict):
            raise ArtifactError(
                f"{path}: field {key!r} is a {type(data[key]).__name__}, expected an object; rerun `sq-trt compare`"
            )
    candidates = data["candidates"]
    if not isinstance(candidates, list) or not all(
        isinstance(c, dict) and isinstance(c.get("name"), str) for c in candidates
    ):
        raise ArtifactError(
            f"{path}: field 'candidates' must be a list of objects with a 'name'; rerun `sq-trt compare`"
        )
    for entry in candidates:
        metrics = data["metrics"].get(entry["name"])
        if not isinstance(metrics, dict) or not isinstance(metrics.get("summary"), dict):
            raise ArtifactError(
                f"{path}: candidate {entry['name'][:60]!r} has no metrics summary; rerun `sq-trt compare`"
            )
    if not isinstance(data["baseline"].get("name"), str):
        raise ArtifactError(f"{path}: the baseline has no 'name'; rerun `sq-trt compare`")


def _jsonable(value: Any) -> Any:
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    return str(value)
