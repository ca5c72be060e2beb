"""KV-cache layout per family: which models have a cache, and the shape of its tensors.

A generation graph (``sq-trt export --with-past``) takes the past keys and values
of every layer as plain tensors and returns the present ones (past + new tokens).
Every decoder family in the registry stores them the same way in transformers:
``[batch, kv_heads, tokens, head_dim]`` per layer, keys and values apart. What
differs per family is where the sizes live in the config, and that is all this
module answers. Encoders (BERT) have no cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sq_trt.errors import UnsupportedArchitectureError
from sq_trt.models.registry import find_spec

# ONNX I/O names, the ones Optimum's "with past" exports use, so other tools recognise them.
PAST_KEY = "past_key_values.{layer}.key"
PAST_VALUE = "past_key_values.{layer}.value"
PRESENT_KEY = "present.{layer}.key"
PRESENT_VALUE = "present.{layer}.value"
INPUT_IDS = "input_ids"
POSITION_IDS = "position_ids"
LOGITS = "logits"


@dataclass(frozen=True)
class CacheLayout:
    """The KV cache of one model.

    Attributes:
        family: Registry family.
        layers: Decoder layers (one key and one value tensor each).
        kv_heads: Key/value heads (fewer than the query heads under grouped-query attention).
        head_dim: Size of one head.
        max_positions: Positions the model was trained for: the largest context a runner may allow.
    """

    family: str
    layers: int
    kv_heads: int
    head_dim: int
    max_positions: int

    def past_names(self) -> list[str]:
        """Graph input names of the past cache, in graph order (layer 0 key, layer 0 value, ...)."""
        return [name.format(layer=i) for i in range(self.layers) for name in (PAST_KEY, PAST_VALUE)]

    def present_names(self) -> list[str]:
        """Graph output names of the present cache, in the order of :meth:`past_names`."""
        return [name.format(layer=i) for i in range(self.layers) for name in (PRESENT_KEY, PRESENT_VALUE)]

    def shape(self, batch: int, tokens: int) -> tuple[int, int, int, int]:
        """The shape of one cache tensor holding ``tokens`` positions."""
        return (batch, self.kv_heads, tokens, self.head_dim)

    def to_json(self) -> dict[str, Any]:
        """JSON form for manifests."""
        return {
            "family": self.family,
            "layers": self.layers,
            "kv_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "max_positions": self.max_positions,
            "layout": "[batch, kv_heads, tokens, head_dim]",
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> CacheLayout:
        """Inverse of :meth:`to_json`."""
        return cls(
            raw["family"],
            int(raw["layers"]),
            int(raw["kv_heads"]),
            int(raw["head_dim"]),
            int(raw["max_positions"]),
        )


def cache_layout(model_or_config: Any) -> CacheLayout:
    """The KV-cache layout of a decoder (or its config).

    Raises:
        UnsupportedArchitectureError: The model is an encoder (no cache) or not registered.
    """
    spec = find_spec(model_or_config)
    config = getattr(model_or_config, "config", model_or_config)
    if spec.kind != "decoder":
        raise UnsupportedArchitectureError(
            f"{config.model_type!r} is an encoder and has no KV cache; generation needs a decoder "
            "(Llama, Mistral, Qwen2/3, SmolLM, OPT, GPT-2)"
        )
    heads = config.num_attention_heads
    if spec.family == "llama":
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    else:  # OPT and GPT-2: multi-head attention, head size = hidden / heads
        kv_heads, head_dim = heads, config.hidden_size // heads
    return CacheLayout(
        spec.family, config.num_hidden_layers, kv_heads, head_dim, config.max_position_embeddings
    )


def forward_with_cache(model: Any, input_ids: Any, position_ids: Any, cache: Any) -> tuple[Any, Any]:
    """One forward pass of a Hugging Face decoder with a cache: ``(logits, updated cache)``.

    transformers 5.x renamed the argument and output ``past_key_values`` to ``cache``
    (the old name is deprecated, to be removed in 5.40); both spellings are handled here,
    the one place that talks to a model's cache.
    """
    import inspect

    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    out = model(input_ids=input_ids, position_ids=position_ids, use_cache=True, **{name: cache})
    updated = getattr(out, "cache", None)
    return out.logits, updated if updated is not None else out.past_key_values
