"""Torch -> ONNX with a KV cache: one decoder graph for prefill and decode.

Inputs: ``input_ids`` int64 ``[batch, seq]``, ``position_ids`` int64 ``[batch, seq]``
and, per layer, ``past_key_values.<i>.key`` / ``.value`` ``[batch, kv_heads, past,
head_dim]`` in the graph's float dtype. Outputs: ``logits`` ``[batch, seq, vocab]``
and ``present.<i>.key`` / ``.value`` ``[batch, kv_heads, past + seq, head_dim]``.
The same graph serves prefill (``seq`` = prompt length, ``past`` = 0) and decode
(``seq`` = 1, ``past`` = tokens so far).

Why ``position_ids`` and no attention mask: the mask is the causal one over
``past + seq`` (transformers derives it from the cache length), so every sequence
of a batch has the same length and no padding; ``position_ids`` is
``past + arange(seq)``. That keeps the graph free of mask arithmetic that
TensorRT would have to evaluate per step, and the runner pads nothing: prompts
of different lengths run as separate sequences. An attention-mask input
(left padding) is the later extension if batching unequal prompts matters.

KV cache dtype: the graph's float dtype (FP16 for the deployed graphs). The
seam for an INT8 cache later is :data:`KV_DTYPES` and the manifest's
``kv_cache.dtype``: the runners read the dtype from the graph, never assume it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sq_trt.export.onnx_export import DEFAULT_OPSET, dynamo_export, model_in_dtype
from sq_trt.models.cache import INPUT_IDS, LOGITS, POSITION_IDS, CacheLayout, cache_layout, forward_with_cache

if TYPE_CHECKING:
    from pathlib import Path

    import onnx
    import torch

    from sq_trt.models.registry import ArchSpec

# Cache dtypes a graph may have; "int8" is the planned option (quantized cache with scales).
KV_DTYPES = ("model",)
# Example sizes of the trace: > 1 so torch.export keeps batch, seq and past symbolic.
_EXAMPLE_BATCH, _EXAMPLE_SEQ, _EXAMPLE_PAST = 2, 5, 7


def build_past_wrapper(model: Any, layout: CacheLayout) -> torch.nn.Module:
    """The module exported: flat tensors in (ids, positions, past), flat tensors out (logits, present).

    The Hugging Face model is held as attribute ``model`` so parameter names in the graph
    get the prefix the Q/DQ rewrite expects (:data:`sq_trt.export.onnx_export.WRAPPED_PREFIX`).
    """
    import torch
    from transformers import DynamicCache

    class DecoderWithPast(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.model = inner

        def forward(
            self, input_ids: torch.Tensor, position_ids: torch.Tensor, past: list[torch.Tensor]
        ) -> tuple[torch.Tensor, ...]:
            cache = DynamicCache()
            for layer in range(layout.layers):
                cache.update(past[2 * layer], past[2 * layer + 1], layer)
            logits, present = forward_with_cache(self.model, input_ids, position_ids, cache)
            tensors: list[torch.Tensor] = []
            for layer in range(layout.layers):
                key, value = _layer_tensors(present, layer)
                tensors.extend((key, value))
            return (logits, *tensors)

    return DecoderWithPast(model).eval()


def _layer_tensors(cache: Any, layer: int) -> tuple[Any, Any]:
    """Key and value tensors of one layer of a transformers cache (layer objects or legacy indexing)."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return layers[layer].keys, layers[layer].values
    return cache[layer][0], cache[layer][1]


def example_inputs(model: Any, layout: CacheLayout, *, batch: int, seq: int, past: int) -> tuple[Any, ...]:
    """Random ids, matching positions and a random past of the model's dtype (for traces and tests)."""
    import torch

    dtype = next(model.parameters()).dtype
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (batch, seq), generator=generator)
    positions = (torch.arange(seq) + past).expand(batch, seq).contiguous()
    cache = [
        torch.randn(layout.shape(batch, past), generator=generator).to(dtype)
        for _ in range(2 * layout.layers)
    ]
    return ids, positions, cache


def export_float_onnx_with_past(
    model: Any, spec: ArchSpec, *, dtype: str = "float16", opset: int = DEFAULT_OPSET, save: Path | None = None
) -> onnx.ModelProto:
    """Export a decoder to an ONNX graph with KV-cache inputs and outputs (see the module docstring).

    Args:
        model: A decoder of a registered family (not modified: a copy is cast to ``dtype``).
        spec: Its registry entry.
        dtype: ``"float16"`` or ``"float32"``: weights, activations and cache.
        opset: ONNX opset of the default domain.
        save: Also write the graph to this ``.onnx`` file (see :func:`sq_trt.export.onnx_export.dynamo_export`).

    Returns:
        The ONNX model, parameter initializers named ``model.<module>.<param>``.

    Raises:
        UnsupportedArchitectureError: An encoder.
        ExportError: The exporter failed (its message is included).
    """
    import torch

    layout = cache_layout(model)
    source = model_in_dtype(model, dtype)
    wrapper = build_past_wrapper(source, layout)
    args = example_inputs(source, layout, batch=_EXAMPLE_BATCH, seq=_EXAMPLE_SEQ, past=_EXAMPLE_PAST)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    past = torch.export.Dim("past", min=0)
    dynamic: dict[str, Any] = {
        INPUT_IDS: {0: batch, 1: seq},
        POSITION_IDS: {0: batch, 1: seq},
        "past": [{0: batch, 2: past}] * (2 * layout.layers),
    }
    return dynamo_export(
        wrapper,
        args,
        dynamic,
        input_names=[INPUT_IDS, POSITION_IDS, *layout.past_names()],
        output_names=[LOGITS, *layout.present_names()],
        opset=opset,
        failure=f"torch.onnx.export (dynamo) with a KV cache failed for {type(model).__name__}",
        hint="Check that the model runs with use_cache=True on CPU",
        save=save,
    )
