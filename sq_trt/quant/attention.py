"""INT8 inputs of the attention batched matmuls (QK^T and PV): the SmoothQuant paper's O3 option.

The paper quantizes the inputs of both attention BMMs besides the linears; O3 uses
static per-tensor scales. Here each decoder layer gets four calibrated ranges:

* ``q`` and ``k``: the query and key *after* rotary embedding (what ``Q K^T`` reads);
* ``p``: the softmax probabilities (what ``P V`` reads);
* ``v``: the value states, which are exactly ``v_proj``'s output, so its range is
  ``output_amax`` of ``v_proj`` (kept exact by smoothing's v->o pair update) and is
  not recorded separately.

Both the observer (calibration) and the reference (fake quantization) run HF's
eager attention maths with hooks, by overriding the ``"eager"`` entry of
transformers' attention-function table for the duration of a ``with`` block, so
the eager float mask and the model code stay the library's own. Supported: the
Llama family (Llama, Mistral, Qwen2, Qwen3); other families raise a ConfigError.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sq_trt.errors import CalibrationError, ConfigError, ExportError

if TYPE_CHECKING:
    import torch

BMM_FAMILIES = ("llama",)
# The ranges recorded by calibration; ``v`` comes from v_proj's output range.
RECORDED = ("q", "k", "p")
BMM_INPUTS = ("q", "k", "v", "p")


def check_family(family: str) -> None:
    """Refuse BMM quantization for families whose attention this module does not hook."""
    if family not in BMM_FAMILIES:
        raise ConfigError(
            f"quantizing the attention BMM inputs (O3) supports the {', '.join(BMM_FAMILIES)} family "
            f"(Llama, Mistral, Qwen2/3), not {family!r}; export without --quantize-bmm"
        )


def attention_modules(model: Any) -> dict[int, str]:
    """``id(module) -> full name`` of every self-attention module (those with ``num_key_value_groups``)."""
    return {
        id(module): name
        for name, module in model.named_modules()
        if hasattr(module, "num_key_value_groups") and hasattr(module, "v_proj")
    }


def _eager(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float,
    hook: Callable[[Any, str, torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """HF's ``eager_attention_forward`` with ``hook(module, which, tensor)`` on q, k, v and p."""
    import torch
    from transformers.models.llama.modeling_llama import repeat_kv

    query = hook(module, "q", query)
    key = hook(module, "k", key)
    value = hook(module, "v", value)
    key_states = repeat_kv(key, module.num_key_value_groups)
    value_states = repeat_kv(value, module.num_key_value_groups)
    # In place on the fresh [batch, heads, q, k] scores (same values as HF's out-of-place ops,
    # two fewer allocations of the largest tensor per layer).
    weights = torch.matmul(query, key_states.transpose(2, 3)).mul_(scaling)
    if attention_mask is not None:
        weights = weights.add_(attention_mask)
    probs = torch.nn.functional.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    probs = torch.nn.functional.dropout(probs, p=dropout, training=module.training)
    probs = hook(module, "p", probs)
    output = torch.matmul(probs, value_states).transpose(1, 2).contiguous()
    return output, probs


@contextmanager
def eager_attention_with(
    model: Any, hook: Callable[[Any, str, torch.Tensor], torch.Tensor]
) -> Iterator[None]:
    """Run ``model`` with eager attention whose BMM inputs pass through ``hook``; restore everything after."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    def attention(
        module: Any,
        query: Any,
        key: Any,
        value: Any,
        attention_mask: Any,
        scaling: float,
        dropout: float = 0.0,
        **_: Any,
    ) -> Any:
        return _eager(module, query, key, value, attention_mask, scaling, dropout, hook)

    had_override = "eager" in ALL_ATTENTION_FUNCTIONS._local_mapping
    saved = ALL_ATTENTION_FUNCTIONS._local_mapping.get("eager")
    with eager_attention(model):
        ALL_ATTENTION_FUNCTIONS["eager"] = attention
        try:
            yield
        finally:
            if had_override:
                ALL_ATTENTION_FUNCTIONS["eager"] = saved
            else:
                del ALL_ATTENTION_FUNCTIONS["eager"]


class BmmObserver:
    """Running per-layer max ``|x|`` of q, k and p (the hook of :func:`eager_attention_with`).

    Per batch: one reduction and one in-place ``torch.maximum`` per input, no host copy;
    :meth:`check_finite` after the last batch (``max`` propagates NaN and inf).
    """

    def __init__(self, model: Any) -> None:
        self.names = attention_modules(model)
        self.amax: dict[str, torch.Tensor] = {}

    def __call__(self, module: Any, which: str, tensor: torch.Tensor) -> torch.Tensor:
        import torch

        if which in RECORDED:
            key = f"{self.names[id(module)]}.{which}"
            # Softmax probabilities are >= 0: their max is max |p| without the |p| copy (the largest tensor).
            value = (tensor.amax() if which == "p" else tensor.abs().amax()).float()
            if key in self.amax:
                torch.maximum(self.amax[key], value, out=self.amax[key])
            else:
                self.amax[key] = value
        return tensor

    def check_finite(self) -> None:
        """Raise CalibrationError naming the first attention input whose range is NaN/inf."""
        import torch

        for key, value in self.amax.items():
            if not bool(torch.isfinite(value)):
                raise CalibrationError(f"non-finite attention values {key!r} during calibration")


def bmm_ranges(model: Any, bmm_amax: Mapping[str, Any], output_amax: Mapping[str, Any]) -> dict[str, float]:
    """The four static ranges per attention module, ``"<attn>.<q|k|v|p>" -> amax``.

    Args:
        model: The model being quantized (its attention modules name the keys).
        bmm_amax: The recorded q/k/p ranges (``ActScales.bmm_amax``).
        output_amax: Per-linear output ranges (``ActScales.output_amax``; gives ``v``).

    Raises:
        ExportError: A range is missing (scales calibrated before this option existed).
    """
    ranges: dict[str, float] = {}
    for name in attention_modules(model).values():
        for which in BMM_INPUTS:
            source = output_amax.get(f"{name}.v_proj") if which == "v" else bmm_amax.get(f"{name}.{which}")
            if source is None:
                raise ExportError(
                    f"no calibrated range for the attention input {which!r} of {name}; the act_scales were "
                    "written without BMM ranges (before sq-trt recorded them, or by the offloaded path): "
                    "run `sq-trt calibrate` again (and smooth), or export without --quantize-bmm"
                )
            ranges[f"{name}.{which}"] = float(source)
    return ranges


@contextmanager
def bmm_fake_quant(model: Any, ranges: Mapping[str, float]) -> Iterator[None]:
    """Within the block, ``model`` fake-quantizes its BMM inputs per tensor with ``ranges`` (the reference)."""
    from sq_trt.quant.reference import fake_quant_per_tensor

    names = attention_modules(model)

    def hook(module: Any, which: str, tensor: torch.Tensor) -> torch.Tensor:
        return fake_quant_per_tensor(tensor, ranges[f"{names[id(module)]}.{which}"])

    with eager_attention_with(model, hook):
        yield


@contextmanager
def eager_attention(model: Any) -> Iterator[None]:
    """Within the block, ``model`` uses HF's plain eager attention (the graph the O3 export rewrites)."""
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(previous)
