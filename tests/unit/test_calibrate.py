"""Calibration statistics against a direct computation, error cases, and the act_scales artifact."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from sq_trt.artifacts import ActScales, load_act_scales, save_act_scales
from sq_trt.calibrate.stage import calibrate
from sq_trt.errors import ArtifactError, CalibrationError, DataError
from sq_trt.models.loading import load_model
from sq_trt.models.registry import quantizable_linears


@pytest.fixture(scope="module")
def llama():
    return load_model("tiny:llama")


@pytest.fixture(scope="module")
def chunks() -> torch.Tensor:
    return torch.randint(0, 256, (3, 32), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def scales(llama, chunks) -> ActScales:
    return calibrate(llama, chunks, progress=False)


def test_first_layer_statistics_match_a_direct_computation(llama, scales, chunks) -> None:
    # Layer 0's q/k/v input is input_layernorm(embed(ids)) and nothing else: compute it without hooks.
    model = llama.model
    layer = model.model.layers[0]
    with torch.inference_mode():
        normed = layer.input_layernorm(model.model.embed_tokens(chunks))
        q = layer.self_attn.q_proj(normed)
    expected = normed.abs().reshape(-1, normed.shape[-1]).amax(dim=0)
    for proj in ("q_proj", "k_proj", "v_proj"):
        name = f"model.layers.0.self_attn.{proj}"
        # Batch-1 streaming vs one batched pass: same values up to float32 kernel differences.
        assert torch.allclose(scales.input_channel_amax[name], expected, rtol=1e-5, atol=1e-6)
        assert scales.input_amax[name].dim() == 0
        assert torch.isclose(scales.input_amax[name], expected.max(), rtol=1e-5)
    assert torch.isclose(scales.output_amax["model.layers.0.self_attn.q_proj"], q.abs().max(), rtol=1e-5)


def test_covers_every_quantized_linear_with_the_contract_shapes(llama, scales) -> None:
    modules = dict(llama.model.named_modules())
    assert scales.linears == quantizable_linears(llama.model)
    for name in scales.linears:
        assert scales.input_channel_amax[name].shape == (modules[name].in_features,)
        assert scales.input_channel_amax[name].dtype == torch.float32
        assert scales.output_amax[name].shape == ()
    assert scales.meta["num_samples"] == 3 and scales.meta["seq_len"] == 32
    assert scales.meta["model_fingerprint"] == llama.fingerprint()


def test_nan_activations_name_the_layer(chunks) -> None:
    loaded = load_model("tiny:llama")
    with torch.no_grad():
        loaded.model.model.layers[1].self_attn.o_proj.weight[0, 0] = float("nan")
    with pytest.raises(CalibrationError, match=r"model\.layers\.1\.self_attn\.o_proj"):
        calibrate(loaded, chunks, progress=False)


def test_inf_activations_are_refused(chunks) -> None:
    loaded = load_model("tiny:opt")
    with torch.no_grad():
        loaded.model.model.decoder.layers[0].fc1.bias[3] = float("inf")
    with pytest.raises(CalibrationError, match=r"fc1"):
        calibrate(loaded, chunks, progress=False)


def test_empty_data_is_a_data_error(llama) -> None:
    with pytest.raises(DataError, match="shape"):
        calibrate(llama, torch.zeros(0, 16, dtype=torch.long), progress=False)


def test_encoder_calibrates(chunks) -> None:
    loaded = load_model("tiny:bert")
    result = calibrate(loaded, chunks, progress=False)
    assert set(result.linears) == set(quantizable_linears(loaded.model))
    assert all(bool(torch.isfinite(v).all()) for v in result.input_channel_amax.values())


def test_artifact_round_trip_and_manifest(tmp_path: Path, llama, scales) -> None:
    scales = dataclasses.replace(
        scales, meta={**scales.meta, "data": {"source": "embedded", "text_hash": "x"}}
    )
    out = save_act_scales(tmp_path / "scales", scales)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "calibrate"
    for key in ("model_fingerprint", "model_source", "family", "data", "num_samples", "seq_len", "linears"):
        assert key in manifest["extra"], key
    loaded = load_act_scales(out, model=llama.model)
    for table in ("input_channel_amax", "input_amax", "output_amax", "output_channel_amax"):
        ours, theirs = getattr(scales, table), getattr(loaded, table)
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    with pytest.raises(ArtifactError, match="exists"):
        save_act_scales(out, scales)


def test_scales_of_another_model_are_refused(tmp_path: Path, scales) -> None:
    out = save_act_scales(tmp_path / "scales", scales)
    other = load_model("tiny:llama")
    with torch.no_grad():
        other.model.model.layers[0].mlp.up_proj.weight.mul_(2)
    with pytest.raises(ArtifactError) as info:
        load_act_scales(out, model=other.model)
    message = str(info.value)
    assert scales.meta["model_fingerprint"] in message and other.fingerprint() in message


def test_tampered_scales_file_is_refused(tmp_path: Path, scales) -> None:
    out = save_act_scales(tmp_path / "scales", scales)
    path = out / "act_scales.safetensors"
    path.write_bytes(path.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ArtifactError, match="changed"):
        load_act_scales(out)
