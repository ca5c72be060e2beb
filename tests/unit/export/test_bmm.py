"""O3: INT8 inputs of the attention BMMs (Q K^T, P V), calibrated, fake-quantized and exported.

The references are independent: q/k after RoPE recomputed by hand from the
projections, and the exported graph run by ONNX Runtime against the PyTorch
reference (W8A8 linears + BMM fake quantization), both float32. The tolerance
follows tests/unit/export/test_export_tiny.py: the ONNX-vs-reference discrepancy must
be under 10 % of the quantization error itself (float rounding occasionally
flips one int8 step; a wrong scale, a missing or misplaced quantizer gives ~1).
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from sq_trt.artifacts import ActScales
from sq_trt.calibrate.stage import calibrate
from sq_trt.errors import ConfigError, ExportError
from sq_trt.export.stage import ExportConfig, export_model
from sq_trt.models.loading import LoadedModel, load_model
from sq_trt.quant.attention import bmm_fake_quant, bmm_ranges
from sq_trt.quant.fakequant import apply_fake_quant
from sq_trt.runtime.onnx import OnnxModelRunner

SEQ = 24


@pytest.fixture(scope="module")
def llama() -> tuple[LoadedModel, ActScales, torch.Tensor]:
    loaded = load_model("tiny:llama")
    torch.manual_seed(3)
    chunks = torch.randint(0, 256, (4, 32))
    return loaded, calibrate(loaded, chunks, progress=False), chunks


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a, dtype=np.float64))))


def test_calibrated_ranges_equal_q_k_after_rope_and_softmax_by_hand(llama: Any) -> None:
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

    loaded, scales, chunks = llama
    model = loaded.model
    assert model.config._attn_implementation == "sdpa"  # calibration restored the implementation
    for index, layer in enumerate(model.model.layers):
        attn = layer.self_attn
        seen: dict[str, Any] = {}
        handle = attn.register_forward_pre_hook(
            lambda mod, args, kwargs, seen=seen: seen.update(kwargs), with_kwargs=True
        )
        q_max = k_max = p_max = torch.tensor(0.0)
        try:
            for row in chunks:
                with torch.no_grad():
                    model(input_ids=row[None], use_cache=False)
                    x = seen["hidden_states"]
                    cos, sin = seen["position_embeddings"]
                    shape = (*x.shape[:-1], -1, attn.head_dim)
                    q = attn.q_proj(x).view(shape).transpose(1, 2)
                    k = attn.k_proj(x).view(shape).transpose(1, 2)
                    q, k = apply_rotary_pos_emb(q, k, cos, sin)
                    scores = q @ repeat_kv(k, attn.num_key_value_groups).transpose(2, 3) * attn.scaling
                    causal = torch.ones(scores.shape[-2:], dtype=torch.bool).tril()
                    probs = scores.masked_fill(~causal, float("-inf")).softmax(-1)
                q_max = torch.maximum(q_max, q.abs().max())
                k_max = torch.maximum(k_max, k.abs().max())
                p_max = torch.maximum(p_max, probs.max())
        finally:
            handle.remove()
        name = f"model.layers.{index}.self_attn"
        torch.testing.assert_close(scales.bmm_amax[f"{name}.q"], q_max, rtol=1e-5, atol=0)
        torch.testing.assert_close(scales.bmm_amax[f"{name}.k"], k_max, rtol=1e-5, atol=0)
        torch.testing.assert_close(scales.bmm_amax[f"{name}.p"], p_max, rtol=1e-5, atol=0)
    ranges = bmm_ranges(model, scales.bmm_amax, scales.output_amax)
    assert ranges["model.layers.0.self_attn.v"] == float(
        scales.output_amax["model.layers.0.self_attn.v_proj"]
    )


def test_scales_round_trip_with_bmm_ranges(llama: Any) -> None:
    _, scales, _ = llama
    again = ActScales.from_tensors(scales.to_tensors(), scales.meta)
    assert again.bmm_amax.keys() == scales.bmm_amax.keys() and len(again.bmm_amax) == 2 * 3


def test_o3_onnx_matches_pytorch_reference_and_changes_the_output(llama: Any, tmp_path: Path) -> None:
    loaded, scales, _ = llama
    out = tmp_path / "o3"
    export_model(
        loaded,
        out,
        scales=scales,
        config=ExportConfig(
            act_mode="per_token", encoding="portable", int8_dtype="float32", quantize_bmm=True
        ),
    )
    extra = json.loads((out / "manifest.json").read_text())["extra"]
    assert len(extra["quantized_bmm_inputs"]) == 2 * 4
    graph = onnx.load(str(out / "model.int8.onnx"))
    counts = Counter(node.op_type for node in graph.graph.node)
    assert counts["QuantizeLinear"] == 8  # q, k, p, v in each of 2 layers (linears use the portable subgraph)

    ids = torch.randint(0, 256, (2, SEQ), generator=torch.Generator().manual_seed(5))
    model = loaded.model
    linears_only = copy.deepcopy(model)
    apply_fake_quant(linears_only, scales, act_mode="per_token")
    ranges = bmm_ranges(model, scales.bmm_amax, scales.output_amax)
    with torch.no_grad():
        float_out = model(input_ids=ids, use_cache=False).logits.numpy()
        w8a8 = linears_only(input_ids=ids, use_cache=False).logits.numpy()
        with bmm_fake_quant(linears_only, ranges):
            ref = linears_only(input_ids=ids, use_cache=False).logits.numpy()
    assert linears_only.config._attn_implementation == "sdpa"  # restored
    got = OnnxModelRunner(out / "model.int8.onnx").run(ids)
    bmm_effect = _rms(ref - w8a8)
    assert bmm_effect > 1e-4, "BMM quantization must change the output, or the option is a no-op"
    ratio = _rms(got - ref) / _rms(ref - float_out)
    assert ratio < 0.1, f"ONNX vs reference discrepancy is {ratio:.3f} of the quantization error"
    assert float(np.mean(got.argmax(-1) == ref.argmax(-1))) >= 0.98


def test_o3_float16_file_is_linted_and_builds_with_tensorrt_rtx(llama: Any, tmp_path: Path) -> None:
    loaded, scales, _ = llama
    out = tmp_path / "o3"
    export_model(loaded, out, scales=scales, config=ExportConfig(encoding="portable", quantize_bmm=True))
    logits = OnnxModelRunner(out / "model.int8.onnx").run(torch.zeros(1, 8, dtype=torch.long))
    assert np.isfinite(logits).all()
    pytest.importorskip("tensorrt_rtx_libs", reason="TensorRT-RTX (the `rtx` extra) is not installed")
    trt = pytest.importorskip(
        "tensorrt_rtx_bindings", reason="TensorRT-RTX (the `rtx` extra) is not installed"
    )
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    parsed = parser.parse_from_file(str(out / "model.int8.onnx"))
    assert parsed, [str(parser.get_error(i)) for i in range(parser.num_errors)]
    kinds = [network.get_layer(i).type for i in range(network.num_layers)]
    assert sum(k == trt.LayerType.QUANTIZE for k in kinds) == 8  # the BMM inputs (linears: portable ops)
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("input_ids", (1, 2), (2, 16), (4, 64))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    assert plan is not None and plan.nbytes > 0


def test_missing_ranges_and_other_families_are_clear_errors(llama: Any, tmp_path: Path) -> None:
    loaded, scales, _ = llama
    old = copy.copy(scales)
    old.bmm_amax = {}
    with pytest.raises(ExportError, match="no calibrated range for the attention input 'q'"):
        export_model(loaded, tmp_path / "a", scales=old, config=ExportConfig(quantize_bmm=True))
    with pytest.raises(ExportError, match="needs act_scales"):
        export_model(loaded, tmp_path / "b", config=ExportConfig(quantize_bmm=True))
    gpt2 = load_model("tiny:gpt2")
    with pytest.raises(ConfigError, match="not 'gpt2'"):
        export_model(gpt2, tmp_path / "c", config=ExportConfig(quantize_bmm=True))
    assert not any(tmp_path.iterdir())  # nothing half-written
