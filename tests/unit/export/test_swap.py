"""One trace per architecture: a graph with another model's weights swapped in equals a fresh trace of it.

Every registered family's tiny model is smoothed with real SmoothQuant; the graph traced from the
unsmoothed model, with the smoothed weights swapped in, must be the graph a fresh trace of the
smoothed model gives: same nodes (op types, inputs, outputs, attributes), same initializer names,
bit-identical initializer data, the same serialized bytes, and exactly the same ONNX Runtime
outputs. The refusals (another architecture; a value the optimizer looked at changing) are
checked against fresh traces too, so a refusal that is not needed or a needed one missing fails.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from sq_trt.calibrate.stage import calibrate
from sq_trt.export.onnx_export import export_float_onnx
from sq_trt.export.past import export_float_onnx_with_past
from sq_trt.export.stage import FloatGraphs
from sq_trt.export.swap import (
    ArchitectureMismatchError,
    WeightSwapRefused,
    architecture_fingerprint,
    swap_weights,
    trace_swappable,
)
from sq_trt.models.loading import LoadedModel, load_model
from sq_trt.runtime.onnx import OnnxModelRunner
from sq_trt.smooth.config import SmoothConfig
from sq_trt.smooth.stage import smooth_model

OPSET = 20
# (family, with_past, dtype): every family, both dtypes, with-past graphs of three decoder families
# (two traces each, ~10 s on the 2-core CI machine: a smaller set than every combination).
CASES = [
    ("llama", False, "float16"),
    ("llama", True, "float32"),
    ("mistral", True, "float16"),
    ("qwen2", False, "float32"),
    ("opt", False, "float16"),
    ("opt", True, "float32"),
    ("gpt2", False, "float32"),
    ("gpt2", True, "float16"),
    ("bert", False, "float16"),
    ("bert", False, "float32"),
]


def _trace(model: Any, loaded: LoadedModel, with_past: bool, dtype: str) -> onnx.ModelProto:
    tracer = export_float_onnx_with_past if with_past else export_float_onnx
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tracer(model, loaded.spec, dtype=dtype, opset=OPSET)


_SMOOTHED: dict[str, tuple[LoadedModel, Any]] = {}


def _smoothed(family: str) -> tuple[LoadedModel, Any]:
    """The tiny model and a copy smoothed with SmoothQuant on its own calibration (kept per family)."""
    if family not in _SMOOTHED:
        loaded = load_model(f"tiny:{family}")
        torch.manual_seed(0)
        scales = calibrate(loaded, torch.randint(0, 256, (4, 32)), progress=False)
        smoothed = copy.deepcopy(loaded.model)
        smooth_model(smoothed, scales, SmoothConfig(alpha=0.6, include_optional=family != "gpt2"))
        _SMOOTHED[family] = (loaded, smoothed)
    return _SMOOTHED[family]


def assert_same_graph(actual: onnx.ModelProto, expected: onnx.ModelProto) -> None:
    """Nodes, initializer names and bytes, graph I/O and the whole serialized model are equal."""
    assert [(n.op_type, n.domain, list(n.input), list(n.output)) for n in actual.graph.node] == [
        (n.op_type, n.domain, list(n.input), list(n.output)) for n in expected.graph.node
    ]
    for a, e in zip(actual.graph.node, expected.graph.node, strict=True):
        assert [x.SerializeToString(deterministic=True) for x in a.attribute] == [
            x.SerializeToString(deterministic=True) for x in e.attribute
        ], a.name
    assert [i.name for i in actual.graph.initializer] == [i.name for i in expected.graph.initializer]
    for a, e in zip(actual.graph.initializer, expected.graph.initializer, strict=True):
        assert (a.data_type, list(a.dims), a.raw_data) == (e.data_type, list(e.dims), e.raw_data), a.name
    assert actual.graph.input == expected.graph.input and actual.graph.output == expected.graph.output
    assert actual.SerializeToString(deterministic=True) == expected.SerializeToString(deterministic=True)


def _feeds(loaded: LoadedModel, graph: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Inputs for every graph input: ids, positions, a past of 3 tokens, or an attention mask with padding."""
    rng = np.random.default_rng(0)
    feeds: dict[str, np.ndarray] = {}
    for value in graph.graph.input:
        name = value.name
        if name == "input_ids":
            feeds[name] = rng.integers(0, 256, (2, 6), dtype=np.int64)
        elif name == "position_ids":
            feeds[name] = np.broadcast_to(np.arange(3, 9, dtype=np.int64), (2, 6)).copy()
        elif name == "attention_mask":
            feeds[name] = np.ones((2, 6), dtype=np.int64)
            feeds[name][1, 4:] = 0
        else:  # past_key_values.<i>.key/value [batch, kv_heads, past, head_dim]
            dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
            dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
            feeds[name] = rng.standard_normal((2, dims[1], 3, dims[3])).astype(dtype)
    return feeds


def _run(graph: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return OnnxModelRunner(graph).session.run(None, feeds)


@pytest.mark.parametrize(("family", "with_past", "dtype"), CASES)
def test_swapped_graph_equals_a_fresh_trace_of_the_smoothed_model(
    family: str, with_past: bool, dtype: str
) -> None:
    loaded, smoothed = _smoothed(family)
    traced = trace_swappable(loaded.model, dtype, lambda: _trace(loaded.model, loaded, with_past, dtype))
    assert traced.unswappable is None
    swapped = swap_weights(traced, smoothed)
    fresh = _trace(smoothed, loaded, with_past, dtype)
    assert_same_graph(swapped, fresh)
    before = {i.name: i.raw_data for i in traced.graph.graph.initializer}
    changed = [i.name for i in swapped.graph.initializer if i.raw_data != before[i.name]]
    assert len(changed) >= 4, changed  # smoothing changed norms and linears: the swap did something
    feeds = _feeds(loaded, fresh)
    for a, e in zip(_run(swapped, feeds), _run(fresh, feeds), strict=True):
        np.testing.assert_array_equal(a, e)  # same graph, same bytes: exactly equal, no tolerance


def test_the_proof_fails_when_the_swap_skips_one_tensor() -> None:
    loaded, smoothed = _smoothed("llama")
    traced = trace_swappable(loaded.model, "float32", lambda: _trace(loaded.model, loaded, False, "float32"))
    swapped = swap_weights(traced, smoothed)
    fresh = _trace(smoothed, loaded, False, "float32")
    assert_same_graph(swapped, fresh)
    # The swap skipping one tensor = the traced model's value left in place for it.
    stale = {i.name: i.raw_data for i in traced.graph.graph.initializer}
    name = "model.model.layers.1.post_attention_layernorm.weight"
    next(i for i in swapped.graph.initializer if i.name == name).raw_data = stale[name]
    with pytest.raises(AssertionError, match=name):
        assert_same_graph(swapped, fresh)
    feeds = _feeds(loaded, fresh)
    assert not np.array_equal(_run(swapped, feeds)[0], _run(fresh, feeds)[0])


def test_another_architecture_is_traced_never_swapped() -> None:
    import transformers as tf

    from sq_trt.models.tiny import tiny_config

    loaded = load_model("tiny:llama")
    config = tiny_config("llama")
    config.rms_norm_eps = 1e-3  # same parameters, shapes and dtypes; another constant in the graph
    eps = tf.LlamaForCausalLM(config).eval()
    eps.load_state_dict(loaded.model.state_dict())
    config = tiny_config("llama")
    config.num_hidden_layers = 1
    shallow = tf.LlamaForCausalLM(config).eval()  # fewer parameters
    assert len({architecture_fingerprint(m) for m in (loaded.model, eps, shallow)}) == 3
    graphs = FloatGraphs()
    for model in (loaded.model, eps, shallow):
        graphs.graph(model, loaded.spec, with_past=False, dtype="float32", opset=OPSET)
    assert (graphs.traces, graphs.reused) == (3, 0)
    traced = trace_swappable(loaded.model, "float32", lambda: _trace(loaded.model, loaded, False, "float32"))
    for model in (eps, shallow):
        with pytest.raises(ArchitectureMismatchError, match="trace this model instead"):
            swap_weights(traced, model)


@pytest.fixture(scope="module")
def gpt2_traced() -> tuple[LoadedModel, Any]:
    """tiny:gpt2 traced in float32: zero biases merged into one initializer, a tied embedding."""
    loaded = load_model("tiny:gpt2")
    traced = trace_swappable(loaded.model, "float32", lambda: _trace(loaded.model, loaded, False, "float32"))
    return loaded, traced


def test_deduplicated_and_tied_tensors_are_recorded(gpt2_traced: tuple[LoadedModel, Any]) -> None:
    loaded, traced = gpt2_traced
    # onnx_ir's deduplication logs are the only record of a merge: a change of its format must fail here.
    assert traced.merged["model.transformer.h.1.ln_1.bias"] == "model.transformer.h.0.ln_1.bias"
    assert "model.transformer.h.1.attn.c_attn.bias" in traced.absent  # a zero bias the optimizer removed
    assert ["model.lm_head.weight", "model.transformer.wte.weight"] in traced.tied
    assert swap_weights(traced, loaded.model).SerializeToString() == traced.graph.SerializeToString()


@pytest.mark.parametrize(
    ("module", "message"),
    [("ln_1", "merged into"), ("attn.c_attn", "not an initializer of the traced graph")],
)
def test_changing_a_merged_or_removed_bias_is_refused_and_a_fresh_trace_differs(
    gpt2_traced: tuple[LoadedModel, Any], module: str, message: str
) -> None:
    loaded, traced = gpt2_traced
    model = copy.deepcopy(loaded.model)
    with torch.no_grad():
        model.get_submodule(f"transformer.h.1.{module}").bias.fill_(0.5)
    with pytest.raises(WeightSwapRefused, match=message):
        swap_weights(traced, model)
    fresh = _trace(model, loaded, False, "float32")  # the bias is its own initializer now
    assert f"model.transformer.h.1.{module}.bias" in {i.name for i in fresh.graph.initializer}
    graphs = FloatGraphs()
    graphs.graph(loaded.model, loaded.spec, with_past=False, dtype="float32", opset=OPSET)
    fallback = graphs.graph(model, loaded.spec, with_past=False, dtype="float32", opset=OPSET)
    assert (graphs.traces, graphs.reused, len(graphs.refused)) == (2, 0, 1)
    assert_same_graph(fallback, fresh)


@pytest.fixture(scope="module")
def llama_traced() -> tuple[LoadedModel, Any]:
    """tiny:llama traced in float16: the rotary buffer is cast by a node the optimizer folds."""
    loaded = load_model("tiny:llama")
    traced = trace_swappable(loaded.model, "float16", lambda: _trace(loaded.model, loaded, False, "float16"))
    return loaded, traced


def _rotary(model: Any) -> None:
    model.model.rotary_emb.inv_freq.mul_(1.5)  # a buffer folded into a constant of the graph


def _zero_norm(model: Any) -> None:
    model.model.norm.weight.zero_()


def _equal_norms(model: Any) -> None:
    layers = model.model.layers
    layers[1].input_layernorm.weight.copy_(layers[0].input_layernorm.weight * 3)
    layers[0].input_layernorm.weight.mul_(3)


@pytest.mark.parametrize(
    ("change", "message"),
    [(_rotary, "folded"), (_zero_norm, "all zeros"), (_equal_norms, "become equal")],
)
def test_a_value_the_optimizer_looked_at_is_refused(
    llama_traced: tuple[LoadedModel, Any], change: Any, message: str
) -> None:
    loaded, traced = llama_traced
    assert "model.model.rotary_emb.inv_freq" in traced.folded_sources
    model = copy.deepcopy(loaded.model)
    with torch.no_grad():
        change(model)
    with pytest.raises(WeightSwapRefused, match=message):
        swap_weights(traced, model)


def test_equal_norms_are_merged_by_a_fresh_trace(llama_traced: tuple[LoadedModel, Any]) -> None:
    """Why a new equality is refused: the fresh trace has one initializer fewer."""
    loaded, traced = llama_traced
    model = copy.deepcopy(loaded.model)
    with torch.no_grad():
        _equal_norms(model)
    fresh = _trace(model, loaded, False, "float16")
    assert len(fresh.graph.initializer) == len(traced.graph.graph.initializer) - 1


def test_torch_and_numpy_round_float16_alike() -> None:
    """The swap casts with torch, as the tracer does; numpy's astype agrees (round to nearest even)."""
    values = torch.randn(200_000, generator=torch.Generator().manual_seed(0)) * 1000
    ties = torch.tensor([1 + 2**-11, 1 + 3 * 2**-11, 2049.0, 2051.0, 65520.0, 1e-8, -0.0])
    for x in (values, ties):
        assert x.to(torch.float16).numpy().tobytes() == x.numpy().astype(np.float16).tobytes()
