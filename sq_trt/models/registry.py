"""Architecture registry: which op feeds which linears, and which linears are quantized.

SmoothQuant needs, for each architecture, the *smoothing groups*: an op whose
output is exactly (and only) the input of a set of linears, so that dividing
that input's channel ``j`` by ``s_j`` and multiplying the linears' weight column
``j`` by ``s_j`` leaves the function unchanged:

* norm -> linears (LayerNorm/RMSNorm weight and bias absorb ``1/s``), on by default;
* linear -> linear (``v_proj -> o_proj``, ``up_proj -> down_proj``): the first
  linear's output rows absorb ``1/s``; optional, off by default.

A group is only listed where folding is exact. BERT is post-LayerNorm: a norm's
output also feeds the residual branch, so folding ``1/s`` into it would change the
function; BERT therefore has only its ``value -> attention.output.dense`` group.

Module names are full dotted paths from the loaded model (``model.layers.0.self_attn.q_proj``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from sq_trt.errors import UnsupportedArchitectureError

PrevKind = Literal["layernorm", "rmsnorm", "linear"]


@dataclass(frozen=True)
class SmoothGroup:
    """One smoothing group.

    Attributes:
        name: Stable identifier (``layers.3.attn_in``), used for per-group alpha overrides.
        prev: Full module name of the op whose output is the linears' input.
        prev_kind: ``"layernorm"``, ``"rmsnorm"`` or ``"linear"``.
        linears: Full module names of the linears that read that input.
        optional: Off unless the user enables linear->linear smoothing.
        repeat: For linear->linear groups under grouped-query attention: each of the
            prev linear's output channels feeds ``repeat`` consecutive head blocks of
            the next linear's input (``num_heads // num_kv_heads``); 1 otherwise.
        head_dim: Head size for ``repeat > 1``; 0 otherwise.
    """

    name: str
    prev: str
    prev_kind: PrevKind
    linears: tuple[str, ...]
    optional: bool = False
    repeat: int = 1
    head_dim: int = 0


@dataclass(frozen=True)
class ArchSpec:
    """How sq-trt handles one architecture family.

    Attributes:
        family: Short family name (``"llama"``, ``"opt"``, ``"gpt2"``, ``"bert"``).
        model_types: ``config.model_type`` values in this family.
        kind: ``"decoder"`` (causal LM, logits out) or ``"encoder"``.
        layers_paths: Candidate attribute paths of the layer list, first match wins.
        quantized: Layer-relative names of the linears to quantize (attention and MLP).
        groups: Builds the smoothing groups of one layer from its full prefix and the config.
        weight_layout: ``"linear"`` (``[out, in]``, nn.Linear) or ``"conv1d"`` (GPT-2's ``[in, out]``).
    """

    family: str
    model_types: tuple[str, ...]
    kind: Literal["decoder", "encoder"]
    layers_paths: tuple[str, ...]
    quantized: tuple[str, ...]
    groups: Callable[[str, int, Any], list[SmoothGroup]]
    weight_layout: Literal["linear", "conv1d"] = "linear"


def _llama_groups(prefix: str, index: int, config: Any) -> list[SmoothGroup]:
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return [
        SmoothGroup(
            f"layers.{index}.attn_in",
            f"{prefix}.input_layernorm",
            "rmsnorm",
            (f"{prefix}.self_attn.q_proj", f"{prefix}.self_attn.k_proj", f"{prefix}.self_attn.v_proj"),
        ),
        SmoothGroup(
            f"layers.{index}.mlp_in",
            f"{prefix}.post_attention_layernorm",
            "rmsnorm",
            (f"{prefix}.mlp.gate_proj", f"{prefix}.mlp.up_proj"),
        ),
        SmoothGroup(
            f"layers.{index}.v_o",
            f"{prefix}.self_attn.v_proj",
            "linear",
            (f"{prefix}.self_attn.o_proj",),
            optional=True,
            repeat=heads // kv_heads,
            head_dim=head_dim,
        ),
        SmoothGroup(
            f"layers.{index}.up_down",
            f"{prefix}.mlp.up_proj",
            "linear",
            (f"{prefix}.mlp.down_proj",),
            optional=True,
        ),
    ]


def _opt_groups(prefix: str, index: int, config: Any) -> list[SmoothGroup]:
    groups = [
        SmoothGroup(
            f"layers.{index}.v_o",
            f"{prefix}.self_attn.v_proj",
            "linear",
            (f"{prefix}.self_attn.out_proj",),
            optional=True,
        )
    ]
    # Post-LN OPT variants (do_layer_norm_before=False, e.g. opt-350m) feed the norm's
    # output into the residual too, so folding into the norm is not exact there.
    if getattr(config, "do_layer_norm_before", True):
        groups[:0] = [
            SmoothGroup(
                f"layers.{index}.attn_in",
                f"{prefix}.self_attn_layer_norm",
                "layernorm",
                (f"{prefix}.self_attn.q_proj", f"{prefix}.self_attn.k_proj", f"{prefix}.self_attn.v_proj"),
            ),
            SmoothGroup(f"layers.{index}.mlp_in", f"{prefix}.final_layer_norm", "layernorm", (f"{prefix}.fc1",)),
        ]
    return groups


def _gpt2_groups(prefix: str, index: int, config: Any) -> list[SmoothGroup]:
    return [
        SmoothGroup(f"layers.{index}.attn_in", f"{prefix}.ln_1", "layernorm", (f"{prefix}.attn.c_attn",)),
        SmoothGroup(f"layers.{index}.mlp_in", f"{prefix}.ln_2", "layernorm", (f"{prefix}.mlp.c_fc",)),
    ]


def _bert_groups(prefix: str, index: int, config: Any) -> list[SmoothGroup]:
    return [
        SmoothGroup(
            f"layers.{index}.v_o",
            f"{prefix}.attention.self.value",
            "linear",
            (f"{prefix}.attention.output.dense",),
        )
    ]


_LLAMA_QUANTIZED = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)

REGISTRY: tuple[ArchSpec, ...] = (
    ArchSpec(
        family="llama",
        model_types=("llama", "mistral", "qwen2", "qwen3"),
        kind="decoder",
        layers_paths=("model.layers", "layers"),
        quantized=_LLAMA_QUANTIZED,
        groups=_llama_groups,
    ),
    ArchSpec(
        family="opt",
        model_types=("opt",),
        kind="decoder",
        layers_paths=("model.decoder.layers", "decoder.layers"),
        quantized=(
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.out_proj",
            "fc1",
            "fc2",
        ),
        groups=_opt_groups,
    ),
    ArchSpec(
        family="gpt2",
        model_types=("gpt2",),
        kind="decoder",
        layers_paths=("transformer.h", "h"),
        quantized=("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"),
        groups=_gpt2_groups,
        weight_layout="conv1d",
    ),
    ArchSpec(
        family="bert",
        model_types=("bert",),
        kind="encoder",
        layers_paths=("bert.encoder.layer", "encoder.layer"),
        quantized=(
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "intermediate.dense",
            "output.dense",
        ),
        groups=_bert_groups,
    ),
)


def supported_architectures() -> list[str]:
    """Every supported ``config.model_type``."""
    return sorted(t for spec in REGISTRY for t in spec.model_types)


def find_spec(model_or_config: Any) -> ArchSpec:
    """The registry entry for a model (or its config).

    Raises:
        UnsupportedArchitectureError: Naming the model type and the supported ones.
    """
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    for spec in REGISTRY:
        if model_type in spec.model_types:
            return spec
    raise UnsupportedArchitectureError(
        f"architecture {model_type!r} is not supported; supported model types: "
        f"{', '.join(supported_architectures())}"
    )


def _layer_prefix(model: Any, spec: ArchSpec) -> tuple[str, int]:
    for path in spec.layers_paths:
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return path, len(obj)
    raise UnsupportedArchitectureError(
        f"{type(model).__name__} ({spec.family} family) has none of the layer lists {spec.layers_paths}; "
        "load the model with a standard Hugging Face class"
    )


def layer_prefixes(model: Any) -> list[str]:
    """Full module names of the model's transformer layers, in order."""
    spec = find_spec(model)
    path, count = _layer_prefix(model, spec)
    return [f"{path}.{i}" for i in range(count)]


def quantizable_linears(model: Any) -> list[str]:
    """Full module names of every linear to quantize (attention and MLP; not embeddings or LM head)."""
    spec = find_spec(model)
    return [f"{prefix}.{name}" for prefix in layer_prefixes(model) for name in spec.quantized]


def smoothing_groups(model: Any, *, include_optional: bool = False) -> list[SmoothGroup]:
    """The smoothing groups of a model, in layer order.

    Args:
        model: A loaded Hugging Face model of a registered family.
        include_optional: Also return the linear->linear groups (v->o, up->down).
    """
    spec = find_spec(model)
    groups: list[SmoothGroup] = []
    for index, prefix in enumerate(layer_prefixes(model)):
        for group in spec.groups(prefix, index, model.config):
            if include_optional or not group.optional:
                groups.append(group)
    return groups
