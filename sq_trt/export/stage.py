"""The export stage: a (smoothed) model and its act_scales -> the export artifact directory.

Writes ``model.fp16.onnx`` (the FP16 baseline: TensorRT 11 is strongly typed, so
the precision is in the ONNX) and ``model.int8.onnx`` (W8A8 with explicit Q/DQ),
lints the INT8 graph for TensorRT's rules, and records in ``manifest.json`` the
I/O, the quantization settings, the quantized and excluded linears, the opset,
the file sizes and the hashes of the model and scales it came from. The
directory is written atomically: a failure leaves nothing behind.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sq_trt.artifacts import artifact_dir, hash_json
from sq_trt.errors import ArtifactError, ConfigError, ExportError
from sq_trt.export.bmm import quantize_bmm_inputs
from sq_trt.export.config import ExportConfig, resolve_encoding
from sq_trt.export.fused import norm_groups_from_model
from sq_trt.export.lint import lint_qdq
from sq_trt.export.onnx_export import WRAPPED_PREFIX, export_float_onnx, graph_io
from sq_trt.export.onnx_files import initializer_bytes, internalize, onnx_bytes, save_onnx
from sq_trt.export.past import export_float_onnx_with_past
from sq_trt.export.qdq import quantize_graph, targets_from_model
from sq_trt.export.swap import (
    TracedGraph,
    WeightSwapRefused,
    architecture_fingerprint,
    swap_weights,
    trace_swappable,
)
from sq_trt.models.cache import cache_layout
from sq_trt.models.loading import max_positions
from sq_trt.models.registry import quantizable_linears
from sq_trt.quant.attention import attention_modules, bmm_ranges, check_family, eager_attention
from sq_trt.quant.plan import PLAN_FILE, write_plan

if TYPE_CHECKING:
    import onnx

    from sq_trt.artifacts.act_scales import ActScales
    from sq_trt.models.loading import LoadedModel
    from sq_trt.quant.plan import QuantPlan

STAGE = "export"
FP16_FILE = "model.fp16.onnx"
INT8_FILE = "model.int8.onnx"
TOKENIZER_DIR = "tokenizer"  # same name as sq_trt.generate.tokenizer.TOKENIZER_DIR
# Peak memory of an export, in bytes per parameter beyond the loaded (memory-mapped) fp32 model.
# Measured on a 1.24 B-parameter Llama (bench/bench_large_export.py, docs/benchmarks/large_export.md):
# 4.0-4.5 GB of anonymous memory at the peak, 3.2-3.7 B/param (the fp16 torch copy while its graph is
# written, then the INT8 graph and its streamed save); 4 leaves ~10 % margin. Not measured, estimated:
# a float32 INT8 graph is traced again and held as a proto (4 B/param) beside its int8 weights;
# graphs kept for other candidates (the pipeline's FloatGraphs) add the kept graph and the copy
# handed out (2 B/param each in fp16, plus 4 each for a float32 one).
_BYTES_PER_PARAM = {"float16": 4, "float32": 8}
_KEPT_GRAPHS_BYTES_PER_PARAM = {"float16": 4, "float32": 12}
_MEMORY_SLACK = 512 * 2**20


def _bmm_inputs(
    loaded: LoadedModel, scales: ActScales | None, config: ExportConfig
) -> tuple[list[str], dict[str, float]]:
    """O3: the attention modules and their BMM-input ranges (empty without ``quantize_bmm``)."""
    if not config.quantize_bmm:
        return [], {}
    check_family(loaded.spec.family)
    if scales is None:
        raise ExportError("--quantize-bmm needs act_scales with the attention ranges (sq-trt calibrate)")
    bmm = bmm_ranges(loaded.model, scales.bmm_amax, scales.output_amax)
    return list(attention_modules(loaded.model).values()), bmm


def _trace_int8(trace: FloatGraphs, loaded: LoadedModel, config: ExportConfig) -> onnx.ModelProto:
    """The float graph the INT8 rewrite starts from, when it cannot be the FP16 one."""
    model = loaded.model
    if config.quantize_bmm:
        # O3 rewrites the eager attention graph, whose MatMuls read exactly q, k, p and v: traced
        # here, never shared (the shared graphs are of the model's own attention implementation).
        with eager_attention(model):
            tracer = export_float_onnx_with_past if config.with_past else export_float_onnx
            return tracer(model, loaded.spec, dtype=config.int8_dtype, opset=config.opset)
    return trace.graph(model, loaded.spec, with_past=config.with_past, dtype=config.int8_dtype, opset=config.opset)


def _manifest_extra(
    loaded: LoadedModel, config: ExportConfig, fp16: onnx.ModelProto, fingerprint: str, scales_hash: str | None
) -> dict[str, Any]:
    """What the export manifest records before the INT8 rewrite (which adds its own results)."""
    model = loaded.model
    return {
        "model_source": loaded.source,
        "family": loaded.spec.family,
        "kind": loaded.spec.kind,
        "model_fingerprint": fingerprint,
        "max_positions": max_positions(model),  # lets `build` refuse profiles past it
        "act_scales_hash": scales_hash,
        "io": {key: [t.to_json() for t in values] for key, values in graph_io(fp16).items()},
        "act_mode": config.act_mode,
        "per_token_encoding": config.encoding if config.act_mode != "per_tensor" else None,
        "int8_dtype": config.int8_dtype,
        "opset": config.opset,
        "files": {"fp16": FP16_FILE, "int8": INT8_FILE},
        **({"kv_cache": {**cache_layout(model).to_json(), "dtype": "graph"}} if config.with_past else {}),
        "float_weights_bytes": {"fp16": _float_bytes(fp16)},
    }


def _rewrite_int8(
    int8: onnx.ModelProto,
    tmp: Path,
    config: ExportConfig,
    targets: Any,
    norm_groups: Any,
    bmm: tuple[list[str], dict[str, float]],
    extra: dict[str, Any],
    plan: QuantPlan,
) -> Any:
    """Rewrite the float graph in place into the INT8 one, lint and write it; record what was quantized."""
    # The kept float tensors first: the norm fusion reads its norms' weights, and the INT8 file
    # must not point into the FP16 file's data. The replaced weights are never read back.
    internalize(int8, tmp, skip={target.initializer for target in targets})
    report = _quantize_planned(int8, config, targets, norm_groups, plan)
    if config.quantize_bmm:
        extra["quantized_bmm_inputs"] = quantize_bmm_inputs(int8, *bmm, act_dtype=config.int8_dtype)
    lint_qdq(int8, plan=plan.modes())
    extra["quantized_linears"] = report.quantized
    extra["activation_quantizers"] = report.activation_quantizers
    extra["fused_norms"] = report.fused_norms
    save_onnx(int8, tmp / INT8_FILE)
    return report


def _quantize_planned(
    int8: onnx.ModelProto, config: ExportConfig, targets: Any, norm_groups: Any, plan: QuantPlan
) -> Any:
    """The INT8 rewrite of every linear in its planned mode: static ones first, then the per-token ones.

    Static linears become plain ``QuantizeLinear -> DequantizeLinear -> MatMul`` (TensorRT's native
    INT8 pattern); per-token ones take the candidate's encoding. The per-token pass fuses only
    the norms whose every linear runs per token (a norm feeding a static linear stays a norm).
    """
    from sq_trt.export.graph import QuantizeReport

    encoding = resolve_encoding(config.encoding, config.act_mode, plugins=False)  # concrete already
    modes = plan.modes()
    report = QuantizeReport()
    for mode in ("per_tensor", "per_token"):
        chosen = [target for target in targets if modes[target.name] == mode]
        if not chosen:
            continue
        names = {target.name for target in chosen}
        part = quantize_graph(
            int8,
            chosen,
            act_mode=mode,  # type: ignore[arg-type]
            encoding=encoding,
            act_dtype=config.int8_dtype,
            norm_groups=[group for group in norm_groups if set(group.linears) <= names],
        )
        report.quantized.extend(part.quantized)
        report.activation_quantizers += part.activation_quantizers
        report.fused_norms.extend(part.fused_norms)
    order = {target.name: i for i, target in enumerate(targets)}
    report.quantized.sort(key=order.__getitem__)
    return report


def _write_plan(plan: QuantPlan, tmp: Path) -> dict[str, Any]:
    """Write ``quant_plan.json``; its summary for the manifest."""
    write_plan(plan, tmp)
    return {
        "file": PLAN_FILE,
        "per_token_linears": len(plan.names("per_token")),
        "per_tensor_linears": len(plan.names("per_tensor")),
        "per_token_flops_share": round(plan.per_token_flops_share(), 6),
    }


def resolve_plan(
    config: ExportConfig,
    plan: QuantPlan | None,
    model: Any,
    quantized: Sequence[str],
    scales: ActScales | None,
) -> QuantPlan:
    """The plan this export follows: ``hybrid`` the given one, else every linear in ``config.act_mode``.

    Static linears get their ``amax``: the calibrated range of their (smoothed) input, the one
    the exported ``QuantizeLinear`` uses (scale ``amax / 127``).

    Raises:
        ExportError: ``hybrid`` without a plan, a plan that does not match the model's quantized
            linears, or a static linear without a calibrated range.
    """
    from sq_trt.quant.plan import LinearChoice, QuantPlan

    modules = dict(model.named_modules())
    flops = {name: int(modules[name].weight.numel()) for name in quantized}
    if config.act_mode != "hybrid":
        plan = QuantPlan.uniform(flops, config.act_mode, reason=f"act_mode {config.act_mode}")  # type: ignore[arg-type]
    elif plan is None:
        raise ExportError(
            "act_mode hybrid follows the quant plan measured by the smooth stage: export from a smoothed "
            "artifact whose search ran with search.act_mode hybrid (sq-trt smooth --search-act-mode hybrid); "
            "it holds quant_plan.json"
        )
    unknown = [name for name in plan.linears if name not in modules]
    missing = [name for name in quantized if name not in plan.linears]
    if unknown or missing:
        what = f"names {len(unknown)} linears this model lacks (first: {unknown[0]})" if unknown else (
            f"has no mode for {len(missing)} quantized linears (first: {missing[0]})"
        )
        raise ExportError(f"the quant plan {what}; smooth this model again with search.act_mode hybrid")
    static = [name for name in quantized if plan.linears[name].act_mode == "per_tensor"]
    check_scales(scales, None, static, "per_tensor")
    amax = scales.input_amax if scales is not None else {}
    linears = {}
    for name in quantized:
        choice = plan.linears[name]
        value = float(amax[name]) if choice.act_mode == "per_tensor" else None
        linears[name] = LinearChoice(
            choice.act_mode, choice.reason, flops[name], choice.static_error, choice.per_token_error, value
        )
    return QuantPlan(linears, smoothed=plan.smoothed, rule=plan.rule)


def _record_sizes(tmp: Path, extra: dict[str, Any]) -> dict[str, int]:
    """File sizes of both graphs (and the FP32 estimate) into ``extra``; returned too."""
    sizes = {"fp16": onnx_bytes(tmp, FP16_FILE), "int8": onnx_bytes(tmp, INT8_FILE)}
    # The FP32 export is not written; its size is the FP16 file with every float weight doubled.
    sizes["fp32_estimate"] = sizes["fp16"] + extra["float_weights_bytes"]["fp16"]
    extra["sizes"] = sizes
    extra["size_ratio_int8_over_fp16"] = round(sizes["int8"] / sizes["fp16"], 4)
    extra["size_ratio_int8_over_fp32"] = round(sizes["int8"] / sizes["fp32_estimate"], 4)
    return sizes


class FloatGraphs:
    """Float ONNX graphs traced once per (architecture, graph kind, dtype, opset), handed out as copies.

    Candidates of one model (per-tensor, per-token portable, plugin...) differ only in the Q/DQ
    rewrite of the same float graph, and models of one architecture (the original, each smoothing
    of it) differ only in weight values; tracing dominates an export. The pipeline passes one
    instance to every export of a run: the first model of an architecture is traced, every other
    one gets that graph with its own weights swapped in (:func:`sq_trt.export.swap.swap_weights`,
    equal to a fresh trace of it), or is traced afresh where the swap is refused. Each caller
    gets its own copy: no export sees another's rewrite.

    ``keep=False`` (an offloaded model, too large to keep a graph between candidates) traces
    every call. :attr:`traces` counts the traces done, :attr:`reused` the graphs swapped,
    :attr:`refused` why a swap was refused.
    """

    def __init__(self, *, keep: bool = True) -> None:
        self._keep = keep
        self._graphs: dict[tuple[str, bool, str, int], TracedGraph] = {}
        self.traces = 0
        self.reused = 0
        self.refused: list[str] = []
        self.last: str | None = None  # "fresh" or "reused": what the latest call did

    def graph(self, model: Any, spec: Any, *, with_past: bool, dtype: str, opset: int) -> onnx.ModelProto:
        """The float graph of ``model``: a fresh trace, or the graph of its architecture with its weights.

        Raises:
            ExportError: The exporter failed (its message is included).
        """
        import onnx

        def trace() -> onnx.ModelProto:
            return self._trace(model, spec, with_past=with_past, dtype=dtype, opset=opset)

        if not self._keep:
            return trace()
        architecture = architecture_fingerprint(model)
        key = (architecture, with_past, dtype, opset)
        kept = self._graphs.get(key)
        if kept is not None:
            try:
                swapped = swap_weights(kept, model, architecture=architecture)
            except WeightSwapRefused as exc:
                self.refused.append(str(exc))  # correct either way: this model gets its own trace
            else:
                self.reused += 1
                self.last = "reused"
                return swapped
            return trace()
        self._graphs[key] = trace_swappable(model, dtype, trace, architecture)
        copy = onnx.ModelProto()
        copy.CopyFrom(self._graphs[key].graph)
        return copy

    def _trace(
        self, model: Any, spec: Any, *, with_past: bool, dtype: str, opset: int, save: Path | None = None
    ) -> onnx.ModelProto:
        """A fresh trace (counted), also written to ``save`` when given."""
        tracer = export_float_onnx_with_past if with_past else export_float_onnx
        self.traces += 1
        self.last = "fresh"
        return tracer(model, spec, dtype=dtype, opset=opset, save=save)

    @property
    def keeps(self) -> bool:
        """Whether traced graphs are kept in memory for later calls."""
        return self._keep

    def write(
        self, model: Any, spec: Any, path: Path, *, with_past: bool, dtype: str, opset: int
    ) -> onnx.ModelProto:
        """:meth:`graph`, written to ``path`` (external data beside it when large); the graph is returned.

        Without ``keep``, the exporter's graph is written straight from its torch tensors and the
        graph returned holds references into ``path``'s data file instead of the weights of a
        large model (:func:`sq_trt.export.onnx_files.write_ir`): the 1.24 B export's peak is the
        FP16 torch copy, not that copy plus a proto of it plus the save's buffers.

        Raises:
            ExportError: The exporter failed (its message is included).
        """
        if self._keep:
            graph = self.graph(model, spec, with_past=with_past, dtype=dtype, opset=opset)
            save_onnx(graph, path)
            return graph
        import gc

        graph = self._trace(model, spec, with_past=with_past, dtype=dtype, opset=opset, save=path)
        # torch.export's program and modules hold reference cycles around the FP16 torch copy:
        # collect them now, before the INT8 rewrite allocates its weights.
        gc.collect()
        return graph

    def stats(self, since: dict[str, Any] | None = None) -> dict[str, Any]:
        """Traces done, graphs reused and refused swaps (for the pipeline's summary).

        Args:
            since: An earlier :meth:`stats` of these graphs: count only what happened after it
                (graphs shared by several pipeline runs).
        """
        before = since or {"traces": 0, "reused": 0, "refused": []}
        return {
            "traces": self.traces - before["traces"],
            "reused": self.reused - before["reused"],
            "refused": self.refused[len(before["refused"]) :],
        }

    def clear(self) -> None:
        """Drop every kept graph."""
        self._graphs.clear()


def _plugins_available() -> bool:
    """Whether ``auto`` would build with TensorRT proper here (importable and a GPU visible)."""
    from sq_trt.engine.backends import load_tensorrt, visible_gpus
    from sq_trt.errors import BuildError, MissingDependencyError

    try:
        load_tensorrt()
    except (MissingDependencyError, BuildError):
        return False
    return bool(visible_gpus())


def _resolved(config: ExportConfig) -> ExportConfig:
    """``encoding="auto"`` made concrete, the way the pipeline decides it from its engine builder."""
    if config.encoding != "auto":
        return config
    plugins = config.act_mode != "per_tensor" and _plugins_available()
    encoding = resolve_encoding(config.encoding, config.act_mode, plugins=plugins)
    return config.model_copy(update={"encoding": encoding})


# Input keys the export stage writes itself, one meaning each: the weights exported and the
# content of the activation scales used. A caller adds the artifacts they came from under the
# producing stage's name (`calibrate`, `smoothed`), the same from the CLI and the pipeline.
OWN_INPUTS = ("model", "act_scales")


def _manifest_inputs(fingerprint: str, scales_hash: str | None, inputs: dict[str, str]) -> dict[str, str]:
    clash = sorted(set(inputs) & set(OWN_INPUTS))
    if clash:
        raise ValueError(f"export writes the manifest inputs {clash} itself; name the source artifact instead")
    return {"model": fingerprint, **({"act_scales": scales_hash} if scales_hash else {}), **inputs}


@dataclass
class ExportResult:
    """What :func:`export_model` wrote."""

    path: Path
    quantized: list[str]
    excluded: list[str]
    sizes: dict[str, int] = field(default_factory=dict)
    plan: QuantPlan | None = None

    @property
    def fp16_path(self) -> Path:
        """The FP16 baseline ONNX."""
        return self.path / FP16_FILE

    @property
    def int8_path(self) -> Path:
        """The W8A8 ONNX."""
        return self.path / INT8_FILE


def available_memory_bytes() -> int:
    """Memory the system can still give this process (``MemAvailable``), in bytes."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_memory(
    num_params: int, int8_dtype: str, available: int | None = None, *, kept_graphs: bool = False
) -> int:
    """Refuse an export that would not fit in memory.

    Args:
        num_params: Parameters of the model.
        int8_dtype: The INT8 graph's float dtype (``float16``/``float32``).
        available: Bytes available (None: ``MemAvailable``).
        kept_graphs: The float graphs are kept in memory for other exports (:class:`FloatGraphs`).

    Returns:
        The estimated peak, in bytes.

    Raises:
        ExportError: When the estimate exceeds the available memory.
    """
    per_param = _BYTES_PER_PARAM[int8_dtype] + (_KEPT_GRAPHS_BYTES_PER_PARAM[int8_dtype] if kept_graphs else 0)
    needed = num_params * per_param + _MEMORY_SLACK
    free = available_memory_bytes() if available is None else available
    if needed > free:
        raise ExportError(
            f"exporting a model of {num_params / 1e6:.1f} M parameters needs about {needed / 2**30:.1f} GiB of "
            f"memory, but only {free / 2**30:.1f} GiB is available; free memory, export on a larger host, "
            "or use --int8-dtype float16 (the default)"
        )
    return needed


def select_linears(model: Any, exclude: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split ``quantizable_linears(model)`` into (quantized, excluded) by ``fnmatch`` patterns.

    Raises:
        ConfigError: A pattern matches no quantizable linear (likely a typo).
    """
    names = quantizable_linears(model)
    for pattern in exclude:
        if not any(fnmatchcase(name, pattern) for name in names):
            raise ConfigError(
                f"--exclude pattern {pattern!r} matches no quantizable linear; names look like {names[0]!r} "
                "(use * wildcards, e.g. '*.mlp.down_proj')"
            )
    excluded = [name for name in names if any(fnmatchcase(name, pattern) for pattern in exclude)]
    return [name for name in names if name not in excluded], excluded


def check_scales(
    scales: ActScales | None, loaded: LoadedModel | None, names: Sequence[str], act_mode: str
) -> None:
    """Refuse scales of another model, or per-tensor export without a scale for every quantized linear.

    Raises:
        ArtifactError: The scales were recorded on a model with other weights.
        ExportError: A quantized linear has no calibrated ``input_amax``.
    """
    if scales is not None and loaded is not None:
        expected = scales.meta.get("model_fingerprint")
        actual = loaded.fingerprint()
        if expected is not None and expected != actual:
            raise ArtifactError(
                f"the act_scales were recorded on model {expected} but the model to export has weights "
                f"{actual}; pass the act_scales of this model (or export from its smoothed artifact)"
            )
    if act_mode == "per_tensor":
        have = scales.input_amax if scales is not None else {}
        missing = [name for name in names if name not in have]
        if missing:
            raise ExportError(
                f"per-tensor export needs a calibrated input_amax for every quantized linear; missing for "
                f"{len(missing)} (first: {missing[0]}). Pass --act-scales of this model, --exclude those "
                "linears, or use --act-mode per-token"
            )


def _float_bytes(model: onnx.ModelProto) -> int:
    import onnx

    return initializer_bytes(model, types=(onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT), external=True)


def export_model(
    loaded: LoadedModel,
    out: str | os.PathLike[str],
    *,
    scales: ActScales | None = None,
    config: ExportConfig | None = None,
    inputs: dict[str, str] | None = None,
    force: bool = False,
    float_graphs: FloatGraphs | None = None,
    plan: QuantPlan | None = None,
) -> ExportResult:
    """Write the export artifact: ``model.fp16.onnx``, ``model.int8.onnx`` (linted) and ``quant_plan.json``.

    Args:
        loaded: The model to export (the smoothed one, or an unsmoothed one for comparison), float32.
        out: The artifact directory to write.
        scales: Its activation statistics (required for ``per_tensor``; the fingerprint is checked).
        config: Export settings.
        inputs: Extra input hashes for the manifest (e.g. the smoothed artifact's fingerprint).
        force: Replace an existing artifact.
        float_graphs: Float graphs already traced from this model (the pipeline's candidates of one
            model share them); ``None`` traces here.
        plan: ``act_mode: hybrid``: the smoothed artifact's measured plan (its ``smoothed`` set to
            that directory); other modes write a plan with every linear in their mode.

    Returns:
        Paths, quantized/excluded linears and file sizes.

    Raises:
        ExportError, ArtifactError, ConfigError: See :func:`check_scales`, :func:`check_memory`,
            :func:`select_linears` and :func:`sq_trt.export.lint.lint_qdq`.
    """
    config = _resolved(config or ExportConfig())
    model = loaded.model
    kept = float_graphs is not None and float_graphs.keeps
    check_memory(sum(p.numel() for p in model.parameters()), config.int8_dtype, kept_graphs=kept)
    quantized, excluded = select_linears(model, config.exclude)
    check_scales(scales, loaded, quantized, "per_token")  # the scales' model; static ranges: resolve_plan
    plan = resolve_plan(config, plan, model, quantized, scales)
    fingerprint = loaded.fingerprint()
    scales_hash = (
        hash_json({k: v.tolist() for k, v in scales.to_tensors().items()}) if scales is not None else None
    )

    bmm_layers, bmm = _bmm_inputs(loaded, scales, config)
    trace = float_graphs or FloatGraphs(keep=False)
    targets = targets_from_model(
        model,
        quantized,
        weight_layout=loaded.spec.weight_layout,
        input_amax=scales.input_amax if scales is not None else None,
        prefix=WRAPPED_PREFIX,
    )
    extra: dict[str, Any] = {}  # filled below; the manifest is written when the block exits
    manifest_inputs = _manifest_inputs(fingerprint, scales_hash, inputs or {})
    with artifact_dir(
        out, stage=STAGE, config=config.model_dump(mode="json"), inputs=manifest_inputs, extra=extra, force=force
    ) as tmp:
        # One float graph in memory at a time: the FP16 file is written first, then the same
        # graph is rewritten in place into the INT8 one (a copy would double the peak memory,
        # about 2 bytes per parameter). A failure below still leaves nothing behind.
        fp16 = trace.write(
            model, loaded.spec, tmp / FP16_FILE, with_past=config.with_past, dtype="float16", opset=config.opset
        )
        extra.update(_manifest_extra(loaded, config, fp16, fingerprint, scales_hash))
        if config.with_past and loaded.tokenizer is not None:
            # Generation needs the tokenizer next to the graphs (sq-trt generate, export-triton).
            loaded.tokenizer.save_pretrained(str(tmp / TOKENIZER_DIR))
        if config.int8_dtype == "float16" and not config.quantize_bmm:
            int8 = fp16
        else:
            del fp16
            int8 = _trace_int8(trace, loaded, config)
        norm_groups = norm_groups_from_model(model, quantized, prefix=WRAPPED_PREFIX)
        report = _rewrite_int8(int8, tmp, config, targets, norm_groups, (bmm_layers, bmm), extra, plan)
        extra["plan"] = _write_plan(plan, tmp)
        extra["excluded_linears"] = excluded
        del int8
        sizes = _record_sizes(tmp, extra)
    return ExportResult(Path(out), report.quantized, excluded, sizes, plan)
