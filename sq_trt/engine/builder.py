"""ONNX -> strongly typed network -> serialized engine, written as ``engines/<name>/<target>.plan``.

The same code builds with TensorRT and TensorRT-RTX (:class:`~sq_trt.engine.backends.Backend`).
Precision comes from the ONNX itself (FP16 graph, INT8 Q/DQ, per-token plugin or
its portable encoding): the network is always strongly typed, which TensorRT 11
requires and TensorRT-RTX always is. The engine directory is an sq-trt artifact
(:func:`sq_trt.artifacts.artifact_dir`): the ``.plan`` files of all its targets
and one manifest, swapped into place atomically, so an interrupted build never
leaves a half-written engine.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

from sq_trt.artifacts import MANIFEST_NAME, artifact_dir, atomic_write_bytes, load_manifest
from sq_trt.engine.backends import Backend
from sq_trt.engine.engine_manifest import STAGE, EngineRecord, IoTensor, dtype_name, engine_records
from sq_trt.engine.gpu import visible_gpus
from sq_trt.engine.inspect import engine_layer_info
from sq_trt.engine.plugin_loader import refuse_plugins_on_rtx, register_plugins
from sq_trt.engine.profiles import ResolvedProfile, resolve_profiles
from sq_trt.engine.recipe import BuildSettings
from sq_trt.engine.releases import container_release
from sq_trt.engine.source import OnnxSource, check_profile_positions, read_onnx_source
from sq_trt.errors import ArtifactError, BuildError, ConfigError

if TYPE_CHECKING:
    # Types only: the API check (tests/trt_api) resolves them to each real TensorRT version's API.
    import tensorrt

Log = Callable[[str], None]

RTX_DEFAULT_TARGETS = "default (TensorRT-RTX: compute capability 8.0, 8.6, 8.9, 12.0 and later)"
RTX_NO_TIMING_CACHE = (
    "not used: TensorRT-RTX has no build-time tactic timing (its timing-cache API is a deprecated no-op "
    "that would force a GPU query and break CPU-only builds)"
)


def _make_logger(trt: ModuleType, log: Log, verbose: bool) -> tuple[tensorrt.ILogger, list[str]]:
    """A ``trt.ILogger`` that echoes warnings, and the list it keeps errors in (for exception messages)."""
    errors: list[str] = []

    class _Logger(trt.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: tensorrt.ILogger.Severity, msg: str) -> None:
            if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                errors.append(msg)
            elif severity == trt.ILogger.Severity.WARNING or verbose:
                log(f"[trt] {msg}")

    return _Logger(), errors


def _parser_errors(parser: tensorrt.OnnxParser) -> list[str]:
    errors = []
    for index in range(parser.num_errors):
        err = parser.get_error(index)
        node = err.node()
        where = f"node #{node} '{err.node_name()}' ({err.node_operator()})" if node >= 0 else "model"
        errors.append(f"{where}: {err.desc()} [{err.code()}]")
    return errors


def _dims(shape: tensorrt.Dims) -> list[int]:
    return [int(shape[index]) for index in range(len(shape))]


def _network_io(network: tensorrt.INetworkDefinition) -> tuple[dict[str, tuple[int, ...]], list[IoTensor]]:
    inputs: dict[str, tuple[int, ...]] = {}
    io: list[IoTensor] = []
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        inputs[tensor.name] = tuple(_dims(tensor.shape))
        io.append(IoTensor(tensor.name, "input", dtype_name(tensor.dtype), _dims(tensor.shape)))
    for index in range(network.num_outputs):
        tensor = network.get_output(index)
        io.append(IoTensor(tensor.name, "output", dtype_name(tensor.dtype), _dims(tensor.shape)))
    return inputs, io


def _engine_io(trt: ModuleType, engine: tensorrt.ICudaEngine) -> list[IoTensor]:
    io = []
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        mode = "input" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output"
        io.append(
            IoTensor(
                name, mode, dtype_name(engine.get_tensor_dtype(name)), _dims(engine.get_tensor_shape(name))
            )
        )
    return io


def _read_back(
    trt: ModuleType, plan: bytes, logger: tensorrt.ILogger, errors: list[str], network_io: list[IoTensor]
) -> tuple[list[IoTensor], str, dict[str, Any], str | None]:
    """I/O and layer information from the deserialized engine where a GPU allows it, else the network's I/O."""
    if not visible_gpus():
        reason = "no GPU visible: engines can only be deserialized on a GPU"
        return network_io, "network", {"available": False, "reason": reason}, None
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    if engine is None:  # e.g. a TensorRT-RTX engine on a GPU outside its compute-capability targets
        reason = "the engine does not deserialize on this GPU: " + (" | ".join(errors[-3:]) or "no detail")
        return network_io, "network", {"available": False, "reason": reason}, None
    summary, raw = engine_layer_info(trt, engine)
    return _engine_io(trt, engine), "engine", summary, raw


def _configure(
    backend: Backend,
    builder: tensorrt.Builder,
    settings: BuildSettings,
    profiles: list[ResolvedProfile],
    log: Log,
) -> tuple[tensorrt.IBuilderConfig, dict[str, Any]]:
    """Builder config from the settings; returns it and the facts for the manifest."""
    trt = backend.trt
    config = builder.create_builder_config()
    for resolved in profiles:
        profile = builder.create_optimization_profile()
        for name, (low, opt, high) in resolved.shapes.items():
            profile.set_shape(name, trt.Dims(list(low)), trt.Dims(list(opt)), trt.Dims(list(high)))
        if config.add_optimization_profile(profile) < 0:
            raise BuildError(
                f"TensorRT rejected optimization profile {resolved.name!r}: {resolved.to_json()}"
            )
    config.builder_optimization_level = settings.opt_level
    if settings.workspace_mb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mb << 20)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    facts: dict[str, Any] = {
        # Which NVIDIA release stack built it (export-triton serves it with the same TensorRT).
        "container_release": container_release(),
        "opt_level": settings.opt_level,
        "workspace_mb": settings.workspace_mb,
        "strongly_typed": True,
    }
    if settings.compute_capabilities:
        # Raises for TensorRT proper, whose config has no compute-capability API (it builds for its GPU).
        enums = [backend.compute_capability_enum(cc) for cc in settings.compute_capabilities]
        if backend.is_rtx:
            config.num_compute_capabilities = len(enums)
            for index, member in enumerate(enums):
                config.set_compute_capability(cast("tensorrt.ComputeCapability", member), index)
    if backend.supports_timing_cache:
        facts["timing_cache"] = _attach_timing_cache(config, settings.timing_cache, log)
    else:
        if settings.timing_cache is not None:
            log(f"[build] timing cache {settings.timing_cache} ignored: {RTX_NO_TIMING_CACHE}")
        facts["timing_cache"] = {"used": False, "reason": RTX_NO_TIMING_CACHE}
    return config, facts


def _attach_timing_cache(config: tensorrt.IBuilderConfig, path: Path | None, log: Log) -> dict[str, Any]:
    if path is None:
        return {"used": False, "reason": "no --timing-cache given"}
    blob = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(blob)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        raise BuildError(
            f"timing cache {path} does not match this TensorRT version or GPU; delete it or pass another path"
        )
    log(f"[build] timing cache {path}: {'loaded ' + str(len(blob)) + ' bytes' if blob else 'new'}")
    return {"used": True, "path": str(path), "loaded_bytes": len(blob)}


def _save_timing_cache(config: tensorrt.IBuilderConfig, facts: dict[str, Any]) -> None:
    cache_facts = facts.get("timing_cache", {})
    if not cache_facts.get("used"):
        return
    blob = bytes(config.get_timing_cache().serialize())
    atomic_write_bytes(cache_facts["path"], blob)
    cache_facts["saved_bytes"] = len(blob)


def _gpu_target(backend: Backend, settings: BuildSettings) -> dict[str, Any]:
    if backend.is_rtx:
        return {
            "kind": "compute_capabilities",
            "compute_capabilities": settings.compute_capabilities or RTX_DEFAULT_TARGETS,
        }
    gpus = visible_gpus()
    if not gpus:
        return {
            "kind": "device",
            "name": "unknown (no GPU visible to the CUDA driver)",
            "compute_capability": None,
        }
    return {"kind": "device", "name": gpus[0].name, "compute_capability": gpus[0].compute_capability}


def _plugin_facts(source: OnnxSource) -> list[dict[str, Any]]:
    counts = Counter((n.op_type, n.version, n.namespace) for n in source.plugin_nodes)
    facts: list[dict[str, Any]] = []
    for (name, version, namespace), count in sorted(counts.items()):
        fact: dict[str, Any] = {"name": name, "version": version, "namespace": namespace, "nodes": count}
        variants = Counter(
            n.gemm_variant for n in source.plugin_nodes if n.op_type == name and n.gemm_variant is not None
        )
        if variants:
            # The fused GEMMs' AOT variant per node count ("aligned" or the slow "unaligned" fallback).
            fact["gemm_variants"] = dict(sorted(variants.items()))
        facts.append(fact)
    return facts


def _existing_records(engine_dir: Path, target: str, force: bool) -> dict[str, EngineRecord]:
    """Records of the directory's other targets; refuse an existing target unless ``force``."""
    if not engine_dir.exists():
        return {}
    if not (engine_dir / MANIFEST_NAME).is_file():
        if any(engine_dir.iterdir()) and not force:
            raise ArtifactError(
                f"{engine_dir} exists and is not an sq-trt engine directory; pass --force to replace it "
                "or choose another --name"
            )
        return {}
    try:
        records = engine_records(load_manifest(engine_dir, stage=STAGE))
    except ArtifactError:
        if not force:
            raise
        return {}
    if (target in records or (engine_dir / f"{target}.plan").exists()) and not force:
        raise ArtifactError(
            f"engine {engine_dir / (target + '.plan')} already exists; pass --force to rebuild it "
            "(the other targets in that directory are kept)"
        )
    return {t: r for t, r in records.items() if t != target}


def build_engine(
    settings: BuildSettings, backend: Backend, *, force: bool = False, log: Log = print, verbose: bool = False
) -> EngineRecord:
    """Build one engine and write it with its manifest entry.

    Args:
        settings: Validated settings (``onnx``, ``name`` and ``target`` must be set).
        backend: The TensorRT flavour that builds.
        force: Replace an existing ``<target>.plan`` in the engine directory.
        log: Where progress lines go.
        verbose: Echo TensorRT's info messages too.

    Returns:
        The engine's manifest record.

    Raises:
        ConfigError: Missing onnx/name/target, or profiles that do not fit the network.
        ArtifactError: The output exists (without ``force``).
        BuildError: Corrupt ONNX, parser errors (with node names), plugin problems, builder failure.
    """
    onnx_path, name, target = _named_build(settings)
    trt = backend.trt
    engine_dir = settings.engines_dir / name
    others = _existing_records(engine_dir, target, force)
    if backend.needs_gpu_to_build and not visible_gpus():
        raise BuildError(
            "the `tensorrt` backend builds on a GPU and none is visible (run the container with --gpus all); "
            "on a CPU-only machine use --backend tensorrt_rtx"
        )

    started = time.perf_counter()
    source = read_onnx_source(onnx_path)
    check_profile_positions(settings.profiles, source.max_positions)
    refuse_plugins_on_rtx(backend, source.plugin_nodes)
    register_plugins(backend, source.plugin_nodes)

    logger, logged_errors = _make_logger(trt, log, verbose)
    builder = trt.Builder(logger)
    log(f"[build] parsing {onnx_path} with {backend.name} {backend.version}")
    # Keep the parser alive until the engine is built: it owns the weights the network points to.
    network, _parser = _parse_onnx(backend, builder, logger, logged_errors, onnx_path)
    inputs, network_io = _network_io(network)
    profiles = resolve_profiles(settings.profiles, inputs, settings.required_shapes)
    config, builder_facts = _configure(backend, builder, settings, profiles, log)
    parsed = time.perf_counter()
    log(f"[build] parsed in {parsed - started:.2f}s; building {name}/{target}.plan ...")

    serialized = builder.build_serialized_network(network, config)
    build_seconds = time.perf_counter() - parsed
    if serialized is None:
        detail = " | ".join(logged_errors[-10:]) or "no error detail reported"
        raise BuildError(f"{backend.name} failed to build {onnx_path}: {detail}")
    plan = bytes(serialized)
    log(f"[build] built in {build_seconds:.2f}s ({len(plan) / 2**20:.1f} MiB)")
    _save_timing_cache(config, builder_facts)

    read_back = _read_back(trt, plan, logger, logged_errors, network_io)
    record = _engine_record(settings, backend, source, profiles, plan, read_back, builder_facts, build_seconds)
    _write_engine_dir(engine_dir, record, plan, read_back[3], others)
    log(f"[build] wrote {engine_dir / record.plan} and {engine_dir / MANIFEST_NAME}")
    return record


def _named_build(settings: BuildSettings) -> tuple[Path, str, str]:
    """The ONNX file, engine name and target one build needs (ConfigError naming the missing ones)."""
    if settings.onnx is None or settings.name is None or settings.target is None:
        missing = [k for k in ("onnx", "name", "target") if getattr(settings, k) is None]
        raise ConfigError(
            f"build needs {', '.join(missing)}: pass --{' --'.join(missing)} or set them in the recipe"
        )
    return settings.onnx, settings.name, settings.target


def _parse_onnx(
    backend: Backend,
    builder: tensorrt.Builder,
    logger: tensorrt.ILogger,
    logged_errors: list[str],
    onnx_path: Path,
) -> tuple[tensorrt.INetworkDefinition, tensorrt.OnnxParser]:
    """The network parsed from ``onnx_path``, and its parser, which owns the weights until the build.

    Raises:
        BuildError: The parser's errors, with node names.
    """
    trt = backend.trt
    network = builder.create_network(backend.network_flags())
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = _parser_errors(parser) or logged_errors or ["no error detail reported"]
        raise BuildError(
            f"the {backend.name} ONNX parser rejected {onnx_path} ({len(errors)} error(s)): "
            + " | ".join(errors[:10])
            + "; fix the exported graph (ops/opset the parser supports) and rebuild"
        )
    return network, parser


def _engine_record(
    settings: BuildSettings,
    backend: Backend,
    source: OnnxSource,
    profiles: list[ResolvedProfile],
    plan: bytes,
    read_back: tuple[list[IoTensor], str, dict[str, Any], str | None],
    builder_facts: dict[str, Any],
    build_seconds: float,
) -> EngineRecord:
    """The engine manifest's record of one built ``.plan``."""
    io, io_source, layer_info, _ = read_back
    target = str(settings.target)
    return EngineRecord(
        target=target,
        plan=f"{target}.plan",
        plan_bytes=len(plan),
        backend=backend.name,
        backend_version=backend.version,
        gpu_target=_gpu_target(backend, settings),
        profiles=[p.to_json() for p in profiles],
        io=io,
        io_source=io_source,
        plugins=_plugin_facts(source),
        source_onnx=str(source.path),
        source_onnx_sha256=source.sha256,
        calibration_hash=source.calibration_hash,
        export_manifest=source.export_manifest,
        builder=builder_facts,
        build_seconds=round(build_seconds, 3),
        layer_info=layer_info,
    )


def _write_engine_dir(
    engine_dir: Path,
    record: EngineRecord,
    plan: bytes,
    layer_json: str | None,
    others: dict[str, EngineRecord],
) -> None:
    records = {**others, record.target: record}
    with artifact_dir(
        engine_dir,
        stage=STAGE,
        config={"name": engine_dir.name},
        inputs={f"{t}.onnx": r.source_onnx_sha256 for t, r in sorted(records.items())},
        extra={"engines": {t: r.to_json() for t, r in sorted(records.items())}},
        force=True,
    ) as tmp:
        for other in others.values():
            for file_name in (other.plan, f"{other.target}.layers.json"):
                src = engine_dir / file_name
                if src.is_file():
                    try:
                        os.link(src, tmp / file_name)
                    except OSError:
                        shutil.copy2(src, tmp / file_name)
        (tmp / record.plan).write_bytes(plan)
        if layer_json is not None:
            (tmp / f"{record.target}.layers.json").write_text(layer_json)
