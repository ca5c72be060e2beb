"""The ``compare`` stage: runners + held-out data -> compare artifact (metrics, gate, saved results).

:func:`compare_models` is what ``sq-trt compare`` and the pipeline call. It
writes the artifact first and only then raises :class:`GateFailedError` when
the gate fails, so a failing run still leaves its evidence on disk.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field

from sq_trt.artifacts import (
    artifact_dir,
    atomic_write_text,
    hash_file,
    library_versions,
    verified_parent_manifest,
)
from sq_trt.artifacts.comparison import COMPARISON_FILE, STAGE, load_comparison, write_comparison
from sq_trt.compare.config import CompareOptions
from sq_trt.compare.gate import Gate, GateVerdict, comparison_verdict, raise_if_failed
from sq_trt.compare.runners import RunnerSpec, make_runner, parse_runner_spec
from sq_trt.errors import ArtifactError, ConfigError
from sq_trt.stage_config import ActMode

LAYERS_FILE = "layers.json"


class CompareConfig(CompareOptions):
    """One comparison: the shared :class:`~sq_trt.compare.config.CompareOptions` plus what it compares.

    Filled from ``sq-trt compare``'s flags and from the recipe (whose ``compare`` section is
    the options). Attributes beyond the options:

    Attributes:
        out: The compare artifact directory to write.
        baseline: ``[NAME=]SPEC`` of the baseline (see :mod:`sq_trt.compare.runners`), or a
            :class:`RunnerSpec`; may be omitted with ``load_results`` (the saved baseline is used).
        candidates: ``NAME=SPEC`` (or :class:`RunnerSpec`) of each candidate run live.
        model: Model whose tokenizer cuts the text (``demo``, ``tiny:<family>``, a directory).
        data: Text source; its evaluation slice (never the calibration slice) is used.
        text_column: Field holding the text in json/parquet data.
        calib_fraction: Fraction of the source reserved for calibration.
        gate: Gate conditions (empty: no gate, the verdict passes).
        load_results: A compare artifact whose saved iterations are replayed instead of running text.
        rank_layers: Model for the per-layer ranking: a smoothed artifact directory, or a
            model source (``demo``); None skips it.
        rank_act_mode: Activation mode of the ranking (``per_token`` / ``per_tensor``).
        device: Torch device of PyTorch runners and the ranking.
        progress: Show progress bars.
        force: Replace an existing ``out`` directory.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    out: Path
    baseline: str | RunnerSpec | None = None
    candidates: list[str | RunnerSpec] = Field(default_factory=list)
    model: str = "demo"
    data: str = "embedded"
    text_column: str = "text"
    calib_fraction: float = Field(default=0.5, gt=0.0, lt=1.0)
    gate: list[str] = Field(default_factory=list)
    load_results: Path | None = None
    rank_layers: str | None = None
    rank_act_mode: ActMode = "per_token"
    device: str = "cpu"
    progress: bool = True
    force: bool = False


def _describe_runner(spec: RunnerSpec) -> dict[str, Any]:
    entry: dict[str, Any] = spec.describe()
    if spec.kind in ("onnx", "plan"):
        path = Path(spec.target)
        if spec.kind == "onnx":
            _check_onnx_loads(spec.name, path)
        entry["sha256"] = hash_file(path)
        # Checks the file against its manifest first: a tampered file never carries the
        # fingerprint of the artifact it replaced (and with a signing key, a file without one is refused).
        manifest = verified_parent_manifest(path)
        if manifest is not None:
            entry["artifact"] = {"stage": manifest.stage, "fingerprint": manifest.fingerprint}
            for key in ("act_mode", "encoding", "backend", "candidates", "model_source"):
                if key in manifest.extra:
                    entry["artifact"][key] = manifest.extra[key]
            plan = _runner_plan(path, manifest)
            if plan is not None:
                entry["plan"] = plan.to_json()
    return entry


def _runner_plan(path: Path, manifest: Any) -> Any:
    """The ``quant_plan.json`` of the export a runner's file comes from (verified), or None.

    An ONNX file sits in its export directory; an engine's record (``extra.engines.<target>``)
    names the ONNX it was built from, whose content hash must still match for its plan to
    describe the engine.
    """
    from sq_trt.quant.plan import load_plan

    if manifest.stage == "export":
        return load_plan(path.parent)
    engines = manifest.extra.get("engines")
    for record in engines.values() if isinstance(engines, dict) else ():
        if not isinstance(record, dict) or record.get("plan") != path.name:
            continue
        source = Path(str(record.get("source_onnx", "")))
        if source.is_file() and hash_file(source) == record.get("source_onnx_sha256"):
            return load_plan(source.parent) if (source.parent / "manifest.json").is_file() else None
    return None


def _check_onnx_loads(name: str, path: Path) -> None:
    """Parse the ONNX protobuf now, so a random or truncated file is one line before any run starts."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, ValueError, OSError... for a corrupt file
        raise ArtifactError(
            f"runner {name}: {path} is not a valid ONNX model ({type(exc).__name__}); re-export it with `sq-trt export`"
        ) from exc
    if not model.graph.node:
        raise ArtifactError(f"runner {name}: {path} has an empty ONNX graph; re-export it with `sq-trt export`")


def provenance(model: str) -> dict[str, Any]:
    """Model, library versions, host and GPU of this run."""
    from sq_trt.engine.gpu import visible_gpus

    gpus = visible_gpus()
    return {
        "model": model,
        "versions": library_versions(),
        "python": platform.python_version(),
        "host": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "gpu": ", ".join(f"{g.name} (sm {g.compute_capability})" for g in gpus) or "none (CPU only)",
    }


def compare_models(config: CompareConfig) -> GateVerdict:
    """Run the comparison, write the artifact, then enforce the gate.

    Returns:
        The (passing) verdict.

    Raises:
        GateFailedError: The gate failed (after the artifact was written).
        ConfigError, DataError, ArtifactError: Invalid inputs.
    """
    gate = Gate.parse(config.gate)
    specs, baseline_spec, loaded_meta, baseline_name, data = _runners_and_data(config)
    live_specs = ([baseline_spec] if baseline_spec else []) + specs
    # Provenance is checked before any model runs: a tampered ONNX fails in a second, not after the run.
    described = {spec.name: _describe_runner(spec) for spec in live_specs}
    runners = [make_runner(spec, device=config.device) for spec in live_specs]
    loader = None
    if config.load_results is None:
        loader, data = _make_loader(config)

    from sq_trt.compare.run import run_comparison

    _quiet_polygraphy()
    with artifact_dir(
        config.out,
        stage=STAGE,
        config=_config_json(config),
        inputs=_inputs(live_specs, loaded_meta),
        force=config.force,
    ) as tmp:
        result = run_comparison(
            runners,
            baseline_name,
            loader=loader,
            loaded=config.load_results,
            save_dir=tmp,
            save_iterations=config.save_iterations,
            progress=config.progress,
        )
        generation = _generation_accuracy(config, live_specs, baseline_name, result.candidates)
        for name, accuracy in generation.items():
            result.metrics[name]["summary"].update(accuracy["metrics"])
        conditions = [str(c) for c in gate.conditions]
        if loaded_meta is not None:
            for entry in [loaded_meta["baseline"], *loaded_meta["candidates"]]:
                described.setdefault(entry["name"], {**entry, "replayed_from": str(config.load_results)})
        data.update(
            iterations=result.iterations, tokens=result.tokens, saved_iterations=result.saved_iterations
        )
        record = {
            "baseline": described[baseline_name],
            "candidates": [described[name] for name in result.candidates],
            "model": {"source": config.model},
            "data": data,
            "gate": None,  # below: the verdict of this very record, as the report recomputes it
            "gate_conditions": conditions,
            "metrics": result.metrics,
            "histograms": result.histograms,
            "timing": result.timing,
            "provenance": provenance(config.model),
        }
        verdict = comparison_verdict(record, conditions)
        record["gate"] = verdict.to_json()
        write_comparison(tmp, {**record, **({"generation": generation} if generation else {})})
        if config.rank_layers:
            ranking = _rank_layers(config)
            atomic_write_text(tmp / LAYERS_FILE, json.dumps(ranking, indent=2) + "\n")
    raise_if_failed(verdict, str(config.out))
    return verdict


def _runners_and_data(
    config: CompareConfig,
) -> tuple[list[RunnerSpec], RunnerSpec | None, dict[str, Any] | None, str, dict[str, Any]]:
    """The candidates, the baseline, the replayed comparison (if any), the baseline's name and data record.

    Raises:
        ConfigError: Duplicate runner names, or nothing to compare.
    """
    specs = [_as_spec(spec) for spec in config.candidates]
    baseline_spec = _as_spec(config.baseline, default_name="baseline") if config.baseline else None
    names = [s.name for s in specs] + ([baseline_spec.name] if baseline_spec else [])
    if len(set(names)) != len(names):
        raise ConfigError(f"runner names must be unique, got {names}")
    if config.load_results is not None:
        # Every saved iteration is re-hashed: replayed outputs are evidence for the gate.
        loaded_meta = load_comparison(config.load_results, verify_files=True)
        baseline_name = baseline_spec.name if baseline_spec else loaded_meta["baseline"]["name"]
        return specs, baseline_spec, loaded_meta, baseline_name, dict(loaded_meta["data"])
    if baseline_spec is None:
        raise ConfigError("give --baseline (e.g. fp16=out/export/model.fp16.onnx), or --load-results")
    if not specs:
        raise ConfigError("give at least one --candidate NAME=SPEC to compare against the baseline")
    return specs, baseline_spec, None, baseline_spec.name, {}


def _generation_accuracy(
    config: CompareConfig, specs: list[RunnerSpec], baseline_name: str, candidates: list[str]
) -> dict[str, Any]:
    """Generation-level accuracy of each candidate (:mod:`sq_trt.generate.accuracy`), or {} when off."""
    if config.generation_prompts <= 0:
        return {}
    from sq_trt.compare.dataloader import evaluation_slice, load_tokenizer
    from sq_trt.data import tokenize_chunks
    from sq_trt.generate.accuracy import baseline_continuations, generation_accuracy

    by_name = {spec.name: spec for spec in specs}
    missing = [name for name in (baseline_name, *candidates) if name not in by_name]
    if missing:
        raise ConfigError(f"generation accuracy needs live runners; {missing} were replayed (--load-results)")
    tokenizer = load_tokenizer(config.model)
    text = evaluation_slice(config.data, text_column=config.text_column, calib_fraction=config.calib_fraction)
    chunks = tokenize_chunks(
        tokenizer, text, seq_len=config.generation_prompt_tokens, max_chunks=config.generation_prompts
    )
    prompts = [list(map(int, row)) for row in chunks]
    context = config.generation_prompt_tokens + config.generation_tokens
    # One runner alive at a time: the baseline's continuations first, then each candidate alone.
    baseline = _step_runner(by_name[baseline_name], context, config.device)
    continuations = baseline_continuations(baseline, prompts, new_tokens=config.generation_tokens)
    del baseline
    out: dict[str, Any] = {}
    for name in candidates:
        accuracy = generation_accuracy(
            None,
            _step_runner(by_name[name], context, config.device),
            prompts,
            new_tokens=config.generation_tokens,
            decode=lambda ids: str(tokenizer.decode(list(ids), skip_special_tokens=True)),
            continuations=continuations,
        )
        out[name] = {**accuracy.to_json(), "metrics": accuracy.metrics()}
    return out


def _step_runner(spec: RunnerSpec, max_context: int, device: str) -> Any:
    """The generation step runner of a runner spec (ONNX generation graph, engine dir, or PyTorch model)."""
    if spec.kind == "onnx":
        from sq_trt.generate.runners import OrtStepRunner

        return OrtStepRunner(spec.target, max_context=max_context)
    if spec.kind == "plan":
        from sq_trt.generate.trt_runner import open_engine_runner

        return open_engine_runner(
            Path(spec.target).parent, target=Path(spec.target).stem, max_context=max_context
        )
    if spec.kind == "torch":
        from sq_trt.generate.runners import TorchStepRunner
        from sq_trt.models.loading import load_model

        return TorchStepRunner(load_model(spec.target, device=device).model, max_context=max_context)
    raise ConfigError(
        f"runner {spec.name!r} ({spec.kind}) cannot generate; generation accuracy needs ONNX generation graphs "
        "(export --with-past), generation engines or a PyTorch model"
    )


def _make_loader(config: CompareConfig) -> tuple[Any, dict[str, Any]]:
    from sq_trt.compare.dataloader import EvalDataLoader, evaluation_slice, load_tokenizer

    text = evaluation_slice(config.data, text_column=config.text_column, calib_fraction=config.calib_fraction)
    loader = EvalDataLoader.from_text(
        load_tokenizer(config.model),
        text,
        seq_len=config.seq_len,
        max_chunks=config.samples,
        batch_size=config.batch_size,
    )
    data = {
        **text.describe(),
        "seq_len": config.seq_len,
        "samples": int(loader.chunks.shape[0]),
        "batch_size": config.batch_size,
        "tokenizer": config.model,
    }
    return loader, data


def _rank_layers(config: CompareConfig) -> dict[str, Any]:
    from sq_trt.compare.layers import rank_layers
    from sq_trt.data import load_slices, tokenize_chunks
    from sq_trt.models.loading import load_model

    source = config.rank_layers
    assert source is not None
    input_amax = None
    if Path(source).is_dir() and (Path(source) / "manifest.json").is_file():
        from sq_trt.artifacts import load_smoothed

        loaded, scales = load_smoothed(source, device=config.device)
        input_amax = {name: float(value) for name, value in scales.input_amax.items()}
    else:
        loaded = load_model(source, device=config.device)
    text = load_slices(config.data, text_column=config.text_column, calib_fraction=config.calib_fraction)[1]
    chunks = tokenize_chunks(
        loaded.tokenizer, text, seq_len=config.rank_seq_len, max_chunks=config.rank_samples
    )
    ranking = rank_layers(
        loaded.model,
        chunks.to(config.device),
        act_mode=config.rank_act_mode,
        input_amax=input_amax,
        progress=config.progress,
    )
    return {**ranking.to_json(), "model": source}


def _config_json(config: CompareConfig) -> dict[str, Any]:
    values = config.model_dump(exclude={"baseline", "candidates"})
    values["baseline"] = _spec_text(config.baseline) if config.baseline is not None else None
    values["candidates"] = [_spec_text(c) for c in config.candidates]
    return {key: str(value) if isinstance(value, Path) else value for key, value in values.items()}


def _spec_text(spec: str | RunnerSpec) -> str:
    return spec if isinstance(spec, str) else spec.text()


def _as_spec(spec: str | RunnerSpec, default_name: str | None = None) -> RunnerSpec:
    """A command-line ``[NAME=]SPEC`` parsed; a typed spec (the pipeline's) as it is."""
    return parse_runner_spec(spec, default_name=default_name) if isinstance(spec, str) else spec


def _inputs(specs: list[RunnerSpec], loaded: dict[str, Any] | None) -> dict[str, str]:
    inputs = {f"runner:{s.name}": f"{s.kind}:{s.target}" for s in specs}
    if loaded is not None:
        inputs["loaded_results"] = loaded.get("schema", "")
    return inputs


def _quiet_polygraphy() -> None:
    # Polygraphy logs every iteration's I/O at INFO; keep the terminal to our progress bar.
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.WARNING


__all__ = ["COMPARISON_FILE", "CompareConfig", "compare_models", "provenance"]
