"""Torch -> ONNX: the floating-point graph every exported file starts from.

``torch.onnx.export(..., dynamo=True)`` is the exporter that handles
transformers' masking code (the TorchScript exporter fails on it). The graph is
exported unoptimized, then optimized by onnxscript with one folding rule changed
and one slow rewrite rule left out (:data:`_SLOW_RULES`): a
``Transpose`` of a parameter is not constant-folded. The default pass folds each
linear's ``W -> Transpose`` into an anonymous constant, losing the
``<module>.weight`` name the Q/DQ rewrite uses to find each linear's MatMul;
TensorRT and ONNX Runtime fold those transposes themselves. The optimization is
needed: TensorRT's parser wants reduction axes and similar shape inputs as
build-time constants, which the unoptimized graph computes at run time.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sq_trt.errors import ExportError
from sq_trt.export.config import DEFAULT_OPSET
from sq_trt.export.onnx_files import write_ir

if TYPE_CHECKING:
    from pathlib import Path

    import onnx
    import torch

    from sq_trt.models.registry import ArchSpec

# DEFAULT_OPSET (20): what the dynamo exporter emits by default with torch 2.13, supported by
# TensorRT's ONNX parser (10.x/11.x) and TensorRT-RTX; DequantizeLinear takes
# float16 scales from opset 19 on, which the FP16 INT8 graph needs.
# Prefix the exporter puts on parameter names: the attribute holding the model in the wrapper.
WRAPPED_PREFIX = "model."
DECODER_OUTPUT = "logits"
ENCODER_OUTPUT = "last_hidden_state"


@dataclass(frozen=True)
class TensorInfo:
    """Name, element type and symbolic shape of one graph input or output."""

    name: str
    dtype: str
    shape: tuple[str | int, ...]

    def to_json(self) -> dict[str, Any]:
        """JSON form for manifests."""
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


def graph_io(model: onnx.ModelProto) -> dict[str, list[TensorInfo]]:
    """The inputs and outputs of an ONNX graph (initializers excluded)."""
    import onnx

    def describe(value: Any) -> TensorInfo:
        tensor_type = value.type.tensor_type
        dims: list[str | int] = [d.dim_param if d.dim_param else d.dim_value for d in tensor_type.shape.dim]
        return TensorInfo(
            value.name, onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name, tuple(dims)
        )

    initializers = {init.name for init in model.graph.initializer}
    return {
        "inputs": [describe(v) for v in model.graph.input if v.name not in initializers],
        "outputs": [describe(v) for v in model.graph.output],
    }


class _Wrapper:
    """Builds the torch module exported: plain tensors in, one tensor out."""

    @staticmethod
    def build(model: Any, kind: str) -> torch.nn.Module:
        import torch

        class DecoderLogits(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.model = inner

            def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
                return self.model(input_ids=input_ids, use_cache=False).logits

        class EncoderHidden(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.model = inner

            def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
                return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

        return DecoderLogits(model) if kind == "decoder" else EncoderHidden(model)


def export_float_onnx(
    model: Any, spec: ArchSpec, *, dtype: str = "float16", opset: int = DEFAULT_OPSET, save: Path | None = None
) -> onnx.ModelProto:
    """Export a Hugging Face model to an ONNX graph in ``dtype``, dynamic batch and sequence.

    Decoders take ``input_ids`` int64 ``[batch, seq]`` and return ``logits``
    ``[batch, seq, vocab]`` (no KV cache); encoders take ``input_ids`` and
    ``attention_mask`` and return ``last_hidden_state``. The model itself is
    not modified (a copy is cast to ``dtype``).

    Args:
        model: A model of a registered family.
        spec: Its registry entry (decides decoder vs encoder I/O).
        dtype: ``"float16"`` or ``"float32"``: the precision of weights and activations in the graph.
        opset: ONNX opset of the default domain.
        save: Also write the graph to this ``.onnx`` file (see :func:`dynamo_export`).

    Returns:
        The ONNX model, parameter initializers named ``model.<module>.<param>``.

    Raises:
        ExportError: The exporter failed (its message is included).
    """
    import torch

    source = model_in_dtype(model, dtype)
    wrapper = _Wrapper.build(source, spec.kind).eval()
    # Example sizes > 1 so torch.export does not specialise the dynamic axes to 1.
    ids = torch.zeros(2, 8, dtype=torch.long)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    if spec.kind == "decoder":
        args: tuple[torch.Tensor, ...] = (ids,)
        dynamic: dict[str, Any] = {"input_ids": {0: batch, 1: seq}}
        outputs = [DECODER_OUTPUT]
    else:
        args = (ids, torch.ones_like(ids))
        dynamic = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
        outputs = [ENCODER_OUTPUT]
    return dynamo_export(
        wrapper,
        args,
        dynamic,
        input_names=list(dynamic),
        output_names=outputs,
        opset=opset,
        failure=f"torch.onnx.export (dynamo) failed for {type(model).__name__}",
        hint="Check that the model runs with use_cache=False on CPU",
        save=save,
    )


def export_torch_dtype(dtype: str) -> torch.dtype:
    """The torch dtype of an export precision (``float16``/``float32``).

    Raises:
        ExportError: Another dtype.
    """
    import torch

    torch_dtype = {"float16": torch.float16, "float32": torch.float32}.get(dtype)
    if torch_dtype is None:
        raise ExportError(f"export dtype must be float16 or float32, got {dtype!r}")
    return torch_dtype


def model_in_dtype(model: Any, dtype: str) -> Any:
    """``model`` in eval mode with ``dtype`` (``float16``/``float32``) weights: itself, or a cast copy.

    Raises:
        ExportError: Another dtype.
    """
    import torch

    torch_dtype = export_torch_dtype(dtype)
    if next(model.parameters()).dtype == torch_dtype:
        return model.eval()
    # deepcopy() then .to() would first copy every weight in the model's dtype (4.9 GB of fp32 at
    # 1.24 B parameters, even from a memory-mapped checkpoint); seeding deepcopy's memo with the
    # cast tensors copies each weight once, straight into ``dtype`` (tied weights stay tied: one id).
    memo: dict[int, Any] = {}
    for tensor in (*model.parameters(), *model.buffers()):
        if id(tensor) in memo or not tensor.is_floating_point():
            continue
        cast = tensor.detach().to(torch_dtype)
        if isinstance(tensor, torch.nn.Parameter):
            cast = torch.nn.Parameter(cast, requires_grad=tensor.requires_grad)
        memo[id(tensor)] = cast
    return copy.deepcopy(model, memo).to(torch_dtype).eval()


def dynamo_export(
    wrapper: Any,
    args: tuple[Any, ...],
    dynamic: Any,
    *,
    input_names: list[str],
    output_names: list[str],
    opset: int,
    failure: str,
    hint: str,
    save: Path | None = None,
) -> onnx.ModelProto:
    """``torch.onnx.export(dynamo=True)``, optimised keeping ``Transpose(weight)`` (weights keep their names).

    The exporter's in-memory graph is constant-folded and cleaned by :func:`_optimize_ir` and its
    per-node debug metadata dropped; a failure is one ExportError.

    With ``save``, the graph is also written to that file by :func:`sq_trt.export.onnx_files.write_ir`,
    from the exporter's own tensors: a graph over the external-data threshold comes back holding
    references into the file instead of its weights, and only the torch copy ever holds them.

    Raises:
        ExportError: ``"<failure>: <exporter's message>. <hint>"``.
    """
    import onnx_ir as ir
    import torch

    try:
        with torch.no_grad():
            program = torch.onnx.export(
                wrapper,
                args,
                dynamo=True,
                dynamic_shapes=dynamic,
                input_names=input_names,
                output_names=output_names,
                opset_version=opset,
                optimize=False,
                verbose=False,
            )
    except Exception as exc:  # the exporter raises many types; all mean "this model did not export"
        raise ExportError(f"{failure}: {exc}. {hint}") from exc
    assert program is not None
    # Optimise the exporter's in-memory IR and serialise once: going through
    # `program.model_proto` first would hold a second full copy of the weights.
    graph = program.model
    _optimize_ir(graph)
    _drop_debug_info(graph)
    proto = ir.to_proto(graph) if save is None else write_ir(graph, save)
    # onnxscript's module-level rewrite rules keep the last graph they matched (their matchers'
    # `_graph`), and with it every tensor of this one: the FP16 torch copy (2.5 GB at 1.24 B
    # parameters) stayed alive until the next export. The graph's tensors are in `proto` or in
    # the file now; drop them from the IR.
    for value in graph.graph.initializers.values():
        value.const_value = None
    return proto


def _keep_parameter_transposes(node: Any) -> bool | None:
    if (
        node.op_type == "Transpose"
        and node.inputs
        and node.inputs[0] is not None
        and node.inputs[0].is_initializer()
    ):
        return False
    return None  # the optimizer's default rules


# onnxscript's default rewrite rules minus this one. SlicesSplit (two Slices of one tensor -> a Split)
# is a two-output pattern whose matcher walks the graph for every Slice: 26 s of the 38 s optimize_ir
# spends on SmolLM2-135M, per iteration, and it rewrote nothing in any graph this tool exports
# (tests/unit/export/test_onnx_export.py compares against the stock optimizer on every family).
_SLOW_RULES = frozenset({"SlicesSplit"})


def _optimize_ir(graph: Any) -> None:
    """onnxscript's ``optimize_ir`` with the parameter-transpose rule, without :data:`_SLOW_RULES`.

    The pass list is ``optimize_ir``'s own (onnxscript 0.7), rebuilt because it takes no rule set;
    the rules and the folding pass are private names, so an onnxscript without them gets the
    stock optimizer (same graph, slower).
    """
    import onnx_ir as ir
    from onnx_ir.passes import common
    from onnxscript import rewriter
    from onnxscript.optimizer import optimize_ir

    try:
        from onnxscript.optimizer import _constant_folding as folding

        rules = [rule for rule in rewriter._DEFAULT_REWRITE_RULES if rule.name not in _SLOW_RULES]
    except (ImportError, AttributeError):
        optimize_ir(graph, should_fold=_keep_parameter_transposes)
        return
    loop = ir.passes.PassManager(
        [
            folding.FoldConstantsPass(
                shape_inference=True,
                input_size_limit=folding.DEFAULT_CONSTANT_FOLD_INPUT_SIZE_LIMIT,
                output_size_limit=folding.DEFAULT_CONSTANT_FOLD_OUTPUT_SIZE_LIMIT,
                should_fold=_keep_parameter_transposes,
            ),
            rewriter.RewritePass(rules),
            common.RemoveUnusedNodesPass(),
            common.RemoveUnusedFunctionsPass(),
            common.RemoveUnusedOpsetsPass(),
        ],
        steps=2,
        early_stop=True,
    )
    ir.passes.Sequential(
        common.InlinePass(),
        loop,
        common.RemoveUnusedNodesPass(),
        common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
        common.LiftSubgraphInitializersToMainGraphPass(),
        common.DeduplicateInitializersPass(),
        common.CommonSubexpressionEliminationPass(),
        common.OutputFixPass(),
        common.NameFixPass(),
    )(graph)


def _drop_debug_info(graph: Any) -> None:
    """Drop the per-node doc strings and metadata (the exporter's stack traces, most of a small model's file)."""
    for node in graph.graph:
        node.doc_string = None
        node.metadata_props.clear()
