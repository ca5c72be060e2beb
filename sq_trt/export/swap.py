"""One trace per architecture: a float graph of one model made into another's by swapping its weights.

Smoothing (and any later weight-only change) alters parameter *values*, never the graph, and
tracing dominates an export. :func:`trace_swappable` traces a model once and records where
every parameter and buffer went; :func:`swap_weights` then writes another model's tensors of
the same architecture into a copy of that graph, by initializer name. The result equals a
fresh trace of the other model (tests/unit/export/test_swap.py proves it per family).

The traced graph is not a plain function of the module: onnxscript's optimizer
(in :func:`sq_trt.export.onnx_export.dynamo_export`) also looks at weight *values*:

- constant folding turns a buffer or parameter into a derived constant (the rotary
  ``inv_freq`` cast, BERT's ``token_type_ids`` expanded); its ``folded_from`` metadata
  names the sources, and those must be unchanged in the new model;
- initializer deduplication merges equal tensors of up to 1024 elements (zero biases, tied
  or equal norm weights) into one; a merged parameter must keep equalling the tensor it was
  merged into, a constant merged into a parameter forbids changing that parameter, and a new
  equality among small tensors would have been merged by a fresh trace;
- no-op rewrites remove ``x * 1`` / ``x + 0`` with scalar constants and zero biases: a
  parameter that becomes all zeros (or a changed scalar) could change the graph.

Any of these makes :func:`swap_weights` raise :class:`WeightSwapRefused`; the caller traces
afresh. A model of another architecture (parameter names, shapes, dtypes, tying, config)
is refused with :class:`ArchitectureMismatchError`, never swapped.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sq_trt.errors import ExportError

# The parameter names in the graph are the wrapped model's FQNs under this attribute (the wrappers
# in onnx_export.py and past.py hold the Hugging Face model as ``self.model``).
from sq_trt.export.onnx_export import WRAPPED_PREFIX, export_torch_dtype

if TYPE_CHECKING:
    import onnx
    import torch

# onnxscript records, per folded constant, the values it was computed from (transitively).
_FOLDED_FROM_KEY = "pkg.onnxscript.optimizer.folded_from"
# onnx_ir's DeduplicateInitializersPass: tensors up to this many elements are merged when equal.
DEDUP_SIZE_LIMIT = 1024
_DEDUP_LOGGER = "onnx_ir.passes.common.initializer_deduplication"
# Config entries that say where a model came from or how to load it, not what it computes (the class
# is in the fingerprint itself; the tensors' dtypes too). A checkpoint saved and reloaded (the smooth
# stage's) gains ``architectures`` and ``dtype`` and another ``_name_or_path``.
_PROVENANCE_KEYS = frozenset(
    {
        "_name_or_path",
        "transformers_version",
        "torch_dtype",
        "dtype",
        "_commit_hash",
        "use_cache",
        "architectures",
    }
)


class ArchitectureMismatchError(ExportError):
    """The model to swap in is not of the traced architecture (trace it instead)."""


class WeightSwapRefused(ExportError):
    """The traced graph depends on a weight value the new model changes (trace it instead)."""


def _named_tensors(model: Any) -> list[tuple[str, torch.Tensor]]:
    """Every parameter and buffer of ``model`` by its own name, tied names included."""
    return [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]


def source_tensors(model: Any, dtype: str) -> Iterator[tuple[str, Any]]:
    """Every parameter and buffer of ``model`` (tied names included) as the tracer sees it in ``dtype``.

    Mirrors :func:`sq_trt.export.onnx_export.model_in_dtype`: the model is cast with ``Module.to``
    (floating-point tensors only, round to nearest even) unless its first parameter already has
    ``dtype``. Cast one tensor at a time, so no second copy of the model is made.

    Yields:
        ``(graph name, tensor)`` with the wrapper's prefix, e.g. ``model.lm_head.weight``.
    """
    torch_dtype = export_torch_dtype(dtype)
    cast = next(model.parameters()).dtype != torch_dtype
    for name, tensor in _named_tensors(model):
        value = tensor.detach()
        if cast and value.is_floating_point():
            value = value.to(torch_dtype)
        yield WRAPPED_PREFIX + name, value


def _tensor_bytes(tensor: Any) -> bytes:
    # ONNX raw_data is little-endian, as numpy's native order on every host torch supports here.
    return bytes(tensor.contiguous().numpy().tobytes())


def _onnx_dtype(tensor: Any) -> int:
    import onnx

    return int(onnx.helper.np_dtype_to_tensor_dtype(tensor.numpy().dtype))


def _alias_groups(model: Any) -> list[list[str]]:
    """Names that are one tensor (tied embeddings): only groups of two or more."""
    groups: dict[int, list[str]] = {}
    for name, tensor in _named_tensors(model):
        groups.setdefault(id(tensor), []).append(WRAPPED_PREFIX + name)
    return sorted(sorted(names) for names in groups.values() if len(names) > 1)


def architecture_fingerprint(model: Any) -> str:
    """What makes two models share a float graph: class, config, tensor names/shapes/dtypes, tying.

    Reads no weight values (an offloaded model's meta tensors work too).
    """
    config = getattr(model, "config", None)
    settings = {}
    if config is not None:
        settings = {k: v for k, v in config.to_dict().items() if k not in _PROVENANCE_KEYS}
        settings["attn_implementation"] = getattr(config, "_attn_implementation", None)
    tensors = [(name, list(tensor.shape), str(tensor.dtype)) for name, tensor in _named_tensors(model)]
    payload = {
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "config": settings,
        "tensors": tensors,
        "tied": _alias_groups(model),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class TracedGraph:
    """A float graph and where the traced model's tensors went in it."""

    graph: onnx.ModelProto
    dtype: str
    architecture: str
    # Names that are initializers of the graph (replaced when swapping).
    named: set[str] = field(default_factory=set)
    # Names absent from the graph -> sha256 of their bytes in the traced model (must stay equal).
    absent: dict[str, str] = field(default_factory=dict)
    # Initializer deduplication: removed name -> kept name.
    merged: dict[str, str] = field(default_factory=dict)
    # Sources some folded constant of the graph was computed from (must stay equal).
    folded_sources: set[str] = field(default_factory=set)
    tied: list[list[str]] = field(default_factory=list)
    # Why no model can be swapped into this graph (None: swappable).
    unswappable: str | None = None


class _MergeRecorder(logging.Handler):
    """Collects onnx_ir's "Replaced initializer 'a' with existing initializer 'b'" records."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.merged: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("Replaced initializer") and isinstance(record.args, tuple):
            removed, kept = record.args
            self.merged[str(removed)] = str(kept)


@contextmanager
def recording_deduplication() -> Iterator[dict[str, str]]:
    """Within the block, record every initializer merge of onnx_ir's deduplication (removed -> kept).

    The pass leaves no trace in the graph of what it merged; its log records are the only record.
    The logger is raised to INFO and kept from propagating only for the block.
    """
    logger = logging.getLogger(_DEDUP_LOGGER)
    recorder = _MergeRecorder()
    level, propagate = logger.level, logger.propagate
    logger.addHandler(recorder)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield recorder.merged
    finally:
        logger.removeHandler(recorder)
        logger.setLevel(level)
        logger.propagate = propagate


def _folded_sources(graph: onnx.ModelProto, sources: set[str]) -> set[str]:
    """The sources any initializer of ``graph`` was constant-folded from (transitively)."""
    import ast

    folded: dict[str, set[str]] = {}
    for value in [*graph.graph.value_info, *graph.graph.initializer]:
        for prop in value.metadata_props:
            if prop.key == _FOLDED_FROM_KEY:
                folded.setdefault(value.name, set()).update(ast.literal_eval(prop.value))
    found: set[str] = set()
    pending = [name for name in folded if name not in sources]
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        for origin in folded.get(name, ()):
            if origin in sources:
                found.add(origin)
            else:
                pending.append(origin)
    return found


def trace_swappable(
    model: Any, dtype: str, trace: Callable[[], onnx.ModelProto], architecture: str | None = None
) -> TracedGraph:
    """Run ``trace`` (a float export of ``model`` in ``dtype``) and record where each tensor went.

    Also checks that every named initializer holds exactly ``model``'s tensor cast as
    :func:`source_tensors` casts it, which is what lets a swap write another model's tensors.

    A named initializer that does not hold the model's tensor (a tracer change this module does
    not know about) marks the graph unswappable: every later model is traced afresh.

    Raises:
        ExportError: The tracer's failure.
    """
    with recording_deduplication() as merged:
        graph = trace()
    inits = {init.name: init for init in graph.graph.initializer}
    traced = TracedGraph(graph, dtype, architecture or architecture_fingerprint(model), merged=dict(merged))
    traced.tied = _alias_groups(model)
    for name, tensor in source_tensors(model, dtype):
        init = inits.get(name)
        if init is None:
            traced.absent[name] = hashlib.sha256(_tensor_bytes(tensor)).hexdigest()
            continue
        if list(init.dims) != list(tensor.shape) or init.raw_data != _tensor_bytes(tensor):
            traced.unswappable = f"initializer {name} is not the traced model's tensor cast to {dtype}"
        traced.named.add(name)
    traced.folded_sources = _folded_sources(graph, traced.named | set(traced.absent))
    return traced


def _check_architecture(traced: TracedGraph, model: Any, architecture: str | None) -> None:
    actual = architecture or architecture_fingerprint(model)
    if actual != traced.architecture:
        raise ArchitectureMismatchError(
            f"cannot swap the weights of a {type(model).__name__} of architecture {actual} into a graph "
            f"traced from architecture {traced.architecture} (other config, parameter names, shapes, dtypes "
            "or tying); trace this model instead"
        )


def _new_values(traced: TracedGraph, model: Any) -> dict[str, Any]:
    """The new model's tensors of the graph's named initializers; checks every other one is unchanged."""
    values: dict[str, Any] = {}
    tied = {name: group for group in traced.tied for name in group}
    for name, tensor in source_tensors(model, traced.dtype):
        if name in traced.named:
            values[name] = tensor
        elif name in traced.absent and any(alias in traced.named for alias in tied.get(name, ())):
            continue  # one tensor with a named initializer (tying is part of the architecture)
        elif name in traced.merged:
            values[name] = tensor  # checked against what it was merged into, below
        elif hashlib.sha256(_tensor_bytes(tensor)).hexdigest() != traced.absent.get(name):
            raise WeightSwapRefused(
                f"{name} is not an initializer of the traced graph (folded, unused or removed) and its value "
                "differs in the new model; trace this model instead"
            )
    return values


def _check_value_dependent(
    traced: TracedGraph, values: dict[str, Any], swapped: dict[str, Any], changed: set[str]
) -> None:
    """Refuse a swap wherever the optimizer's decisions depended on a value that changes."""
    for removed, kept in traced.merged.items():
        if removed in values:  # a tensor merged into ``kept``: the two must stay equal
            if _tensor_bytes(values[removed]) != swapped[kept].raw_data:
                raise WeightSwapRefused(
                    f"{removed} was merged into the equal initializer {kept} when traced; they differ in the "
                    "new model; trace this model instead"
                )
        elif kept in changed:
            raise WeightSwapRefused(
                f"the constant {removed} was merged into the equal initializer {kept} when traced and {kept} "
                "changes in the new model; trace this model instead"
            )
    stale = sorted(traced.folded_sources & changed)
    if stale:
        raise WeightSwapRefused(
            f"a constant of the traced graph was folded from {stale[0]}, which changes in the new model; "
            "trace this model instead"
        )
    for name in sorted(changed):
        tensor = values[name]
        if tensor.numel() == 1 or not bool(tensor.any()):
            raise WeightSwapRefused(
                f"{name} becomes {'a new scalar' if tensor.numel() == 1 else 'all zeros'} in the new model, "
                "which the optimizer may rewrite away in a fresh trace; trace this model instead"
            )


def _check_no_new_duplicates(graph: onnx.ModelProto) -> None:
    """A fresh trace merges equal small initializers: refuse a swap that makes two of them equal."""
    seen: dict[tuple[int, tuple[int, ...], bytes], str] = {}
    for init in graph.graph.initializer:
        size = 1
        for dim in init.dims:
            size *= dim
        if size > DEDUP_SIZE_LIMIT:
            continue
        key = (init.data_type, tuple(init.dims), bytes(init.raw_data))
        if key in seen:
            raise WeightSwapRefused(
                f"initializers {seen[key]} and {init.name} become equal in the new model (a fresh trace merges "
                "them into one); trace this model instead"
            )
        seen[key] = init.name


def swap_weights(traced: TracedGraph, model: Any, *, architecture: str | None = None) -> onnx.ModelProto:
    """A copy of ``traced.graph`` holding ``model``'s weights: what tracing ``model`` would give.

    Args:
        traced: A graph recorded by :func:`trace_swappable`.
        model: A model of the same architecture (typically the traced one, smoothed).
        architecture: ``architecture_fingerprint(model)`` if already computed.

    Returns:
        A new ``ModelProto``; ``traced`` is not modified.

    Raises:
        ArchitectureMismatchError: Another architecture (trace it instead).
        WeightSwapRefused: The graph depends on a value the new model changes (trace it instead).
    """
    import onnx

    _check_architecture(traced, model, architecture)
    if traced.unswappable is not None:
        raise WeightSwapRefused(f"{traced.unswappable}; trace this model instead")
    values = _new_values(traced, model)
    swapped = onnx.ModelProto()
    swapped.CopyFrom(traced.graph)
    inits = {init.name: init for init in swapped.graph.initializer}
    changed: set[str] = set()
    for name in traced.named:
        init, tensor = inits[name], values[name]
        assert list(init.dims) == list(tensor.shape) and init.data_type == _onnx_dtype(tensor), name
        data = _tensor_bytes(tensor)
        if data != init.raw_data:
            changed.add(name)
            init.raw_data = data
    _check_value_dependent(traced, values, inits, changed)
    _check_no_new_duplicates(swapped)
    return swapped
