"""How to run a batch through a loaded model, and which output to read: decided from its config.

Stages never decide "decoder or encoder" from a model's source string (a real BERT
directory is as much an encoder as ``tiny:bert``); they ask this module, which asks
the registry entry for the model's ``config.model_type``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sq_trt.models.registry import ArchSpec, find_spec

if TYPE_CHECKING:
    import torch

DECODER_OUTPUT = "logits"
ENCODER_OUTPUT = "last_hidden_state"


def output_name(model_or_spec: Any) -> str:
    """``"logits"`` for a causal LM, ``"last_hidden_state"`` for an encoder.

    Args:
        model_or_spec: A loaded Hugging Face model, its config, or its :class:`ArchSpec`.

    Raises:
        UnsupportedArchitectureError: The model type is not in the registry.
    """
    spec = model_or_spec if isinstance(model_or_spec, ArchSpec) else find_spec(model_or_spec)
    return DECODER_OUTPUT if spec.kind == "decoder" else ENCODER_OUTPUT


def forward(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """One forward pass without a KV cache; returns the logits or the last hidden state.

    Inputs are moved to the model's device; the caller picks the grad mode.
    """
    device = next(model.parameters()).device
    kwargs: dict[str, Any] = {"input_ids": input_ids.to(device)}
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask.to(device)
    if output_name(model) == DECODER_OUTPUT:
        return model(**kwargs, use_cache=False).logits
    return model(**kwargs).last_hidden_state


def forward_body(model: Any, input_ids: torch.Tensor) -> None:
    """Run the transformer layers only: no LM head, no KV cache, nothing returned.

    Calibration needs the quantized linears' inputs, all inside the layers; a causal
    LM's head (SmolLM2: 28 M of its 135 M parameters, a ``[tokens, 49152]`` output)
    is pure cost there. ``base_model`` is the body for every registry family
    (``LlamaForCausalLM.model``, ``GPT2LMHeadModel.transformer``, an encoder itself).
    """
    device = next(model.parameters()).device
    body = getattr(model, "base_model", model)
    if output_name(model) == DECODER_OUTPUT:
        body(input_ids=input_ids.to(device), use_cache=False)
    else:
        body(input_ids=input_ids.to(device))
