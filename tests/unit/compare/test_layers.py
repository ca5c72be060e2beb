"""Per-layer localisation: leave-one-in KL against the W8A8Linear reference model, suggestions, TensorRT path."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from sq_trt.compare.layers import rank_layers
from sq_trt.compare.metrics import kl_divergence
from sq_trt.errors import ConfigError
from sq_trt.models.loading import load_model
from sq_trt.models.registry import quantizable_linears


def _chunks(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(seed))


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return model(input_ids=ids, use_cache=False).logits.float().numpy()


def _reference_kl(
    model: torch.nn.Module, ids: torch.Tensor, layer: str, act_mode: str, scales: object = None
) -> float:
    """KL with only `layer` quantized, through the fake-quant module the quantize stage uses (separate code)."""
    from sq_trt.quant.fakequant import apply_fake_quant

    quantized = copy.deepcopy(model)
    others = [name for name in quantizable_linears(model) if name != layer]
    assert apply_fake_quant(quantized, scales, act_mode=act_mode, exclude=others) == [layer]
    return float(kl_divergence(_logits(model, ids), _logits(quantized, ids)).mean())


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_leave_one_in_kl_equals_the_fake_quant_reference(family: str) -> None:
    model = load_model(f"tiny:{family}").model
    ids = _chunks()
    before = _logits(model, ids)
    names = quantizable_linears(model)
    picked = [names[0], names[-1]]
    ranking = rank_layers(model, ids, layers=picked, progress=False)
    by_name = {layer.name: layer for layer in ranking.layers}
    for name in picked:
        # Same reference semantics in both: equal up to float32 summation order.
        assert by_name[name].kl_leave_one_in == pytest.approx(
            _reference_kl(model, ids, name, "per_token"), rel=1e-5
        )
    # The model is left as it was (every swapped forward restored).
    np.testing.assert_array_equal(_logits(model, ids), before)


def test_per_tensor_ranking_uses_each_layers_own_amax() -> None:
    from sq_trt.calibrate.stage import calibrate

    loaded = load_model("tiny:llama")
    scales = calibrate(loaded, _chunks(1), progress=False)
    amax = {name: float(value) for name, value in scales.input_amax.items()}
    ids = _chunks()
    names = quantizable_linears(loaded.model)[:3]
    ranking = rank_layers(
        loaded.model, ids, act_mode="per_tensor", input_amax=amax, layers=names, progress=False
    )
    for layer in ranking.layers:
        reference = _reference_kl(loaded.model, ids, layer.name, "per_tensor", scales)
        assert layer.kl_leave_one_in == pytest.approx(reference, rel=1e-5), layer.name
    with pytest.raises(ConfigError, match="calibrated input amax"):
        rank_layers(loaded.model, ids, act_mode="per_tensor", input_amax={}, layers=names, progress=False)


def test_ranking_is_sorted_and_suggests_by_error_source() -> None:
    model = load_model("tiny:llama").model
    ranking = rank_layers(model, _chunks(), progress=False)
    kls = [layer.kl_leave_one_in for layer in ranking.layers]
    assert kls == sorted(kls, reverse=True)
    assert len(ranking.layers) == len(quantizable_linears(model))
    assert ranking.kl_all_layers > 0
    for layer in ranking.layers:
        # The local error splits into activation and weight parts; the total is not below the larger part's scale.
        assert 0 < layer.output_error_ratio < 1
        if layer.group is None:  # o_proj / down_proj: no smoothable norm before them
            assert layer.suggestion.startswith("exclude")
        elif layer.act_error_ratio >= layer.weight_error_ratio:
            assert "raise alpha" in layer.suggestion
        else:
            assert "lower alpha" in layer.suggestion
    assert {layer.group for layer in ranking.layers if layer.name.endswith("q_proj")} == {
        "layers.0.attn_in",
        "layers.1.attn_in",
    }
    data = ranking.to_json()
    assert data["kl_sum_of_layers"] == pytest.approx(sum(kls))


def test_encoders_are_refused() -> None:
    model = load_model("tiny:bert").model
    with pytest.raises(ConfigError, match="encoder"):
        rank_layers(model, _chunks(), progress=False)


@pytest.mark.gpu
def test_tensorrt_debug_tensor_matches_numpy(tmp_path: object) -> None:
    """An intermediate tensor read as a TensorRT debug tensor equals its numpy value (GPU hosts only)."""
    pytest.importorskip(
        "tensorrt",
        reason="TensorRT proper (GPU hosts / NVIDIA's container) is not installable on this CPU machine",
    )
    from sq_trt.engine.gpu import visible_gpus

    if not visible_gpus():
        pytest.skip("TensorRT debug tensors need an NVIDIA GPU to run the engine")
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from sq_trt.compare.layers import trt_debug_tensors

    rng = np.random.default_rng(0)
    embedding = rng.normal(size=(32, 8)).astype(np.float32)
    head = rng.normal(size=(8, 32)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["E", "input_ids"], ["h"]),
            helper.make_node("MatMul", ["h", "W"], ["logits"]),
        ],
        "g",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", "s", 32])],
        [numpy_helper.from_array(embedding, "E"), numpy_helper.from_array(head, "W")],
    )
    path = f"{tmp_path}/g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    ids = rng.integers(0, 32, size=(2, 5))
    values = trt_debug_tensors(path, ["h"], {"input_ids": ids})
    # TF32 may be used for the MatMul, but the Gather output `h` is an exact copy of the embedding rows.
    np.testing.assert_array_equal(values["h"], embedding[ids])
    np.testing.assert_allclose(values["logits"], embedding[ids] @ head, rtol=1e-2, atol=1e-2)
