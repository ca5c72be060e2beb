"""SmoothQuant folding: equivalence per family, the factor formula, edge cases, alphas, artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sq_trt.artifacts import FACTORS_FILE, load_smoothed, read_safetensors
from sq_trt.calibrate.stage import calibrate
from sq_trt.errors import ArtifactError, ConfigError
from sq_trt.models.loading import load_model
from sq_trt.models.registry import SmoothGroup, smoothing_groups
from sq_trt.smooth.search import collect_group_inputs, quantized_output_error, search_alpha
from sq_trt.smooth.stage import (
    AlphaSearchConfig,
    SmoothConfig,
    check_equivalence,
    parse_override,
    reference_outputs,
    save_smoothed,
    smooth_model,
    smoothed_act_scales,
    smoothing_factor,
)

IDS = torch.randint(0, 256, (2, 40), generator=torch.Generator().manual_seed(0))
# Folding reassociates float32 products (each ~6e-8 relative); through 2 layers the logits move by
# ~1e-6 of their range. 1e-4 keeps a wide margin and still fails on any wrong fold (O(1) changes).
EQUIVALENCE_RTOL = 1e-4


def _calibrated(source: str):
    loaded = load_model(source)
    return loaded, calibrate(loaded, IDS, progress=False)


@pytest.mark.parametrize(
    ("family", "include_optional"),
    [
        ("llama", False),
        ("llama", True),
        ("mistral", True),
        ("qwen2", True),
        ("opt", True),
        ("gpt2", False),
        ("bert", False),
    ],
)
def test_smoothing_keeps_the_function(family: str, include_optional: bool) -> None:
    loaded, scales = _calibrated(f"tiny:{family}")
    reference = reference_outputs(loaded.model, IDS)
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    result = smooth_model(loaded.model, scales, SmoothConfig(alpha=0.7, include_optional=include_optional))
    assert result.groups == smoothing_groups(loaded.model, include_optional=include_optional)
    changed = [k for k, v in loaded.model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "smoothing changed no weight"
    assert check_equivalence(loaded.model, IDS, reference, rtol=EQUIVALENCE_RTOL) <= EQUIVALENCE_RTOL


def test_gqa_v_o_factor_is_shared_by_heads_of_one_kv_head() -> None:
    loaded, scales = _calibrated("tiny:llama")  # 4 heads, 2 kv heads: repeat 2, head_dim 16
    o_proj = loaded.model.model.layers[0].self_attn.o_proj
    original = o_proj.weight.detach().clone()
    result = smooth_model(loaded.model, scales, SmoothConfig(alpha=0.5, include_optional=True))
    factor = result.factors["layers.0.v_o"]
    assert factor.shape == (32,)  # v_proj's output channels, not o_proj's 64 inputs
    column_scale = (o_proj.weight / original)[0]
    for head in range(4):
        kv = head // 2
        block = column_scale[head * 16 : (head + 1) * 16]
        assert torch.allclose(block, factor[kv * 16 : (kv + 1) * 16], rtol=1e-6)


def test_factor_formula_against_numpy() -> None:
    generator = torch.Generator().manual_seed(3)
    act = torch.rand(64, generator=generator) * 10 + 0.01
    weight = torch.rand(64, generator=generator) + 0.01
    for alpha in (0.0, 0.25, 0.5, 0.85, 1.0):
        expected = np.power(act.double().numpy(), alpha) / np.power(weight.double().numpy(), 1 - alpha)
        got = smoothing_factor(act, weight, alpha).double().numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-6)  # float32 result of a float64 computation


def test_zero_channels_keep_factor_one_and_tiny_factors_are_clamped() -> None:
    act = torch.tensor([0.0, 2.0, 1e-12, 4.0])
    weight = torch.tensor([1.0, 0.0, 1.0, 1.0])
    factor = smoothing_factor(act, weight, 0.5, min_scale=1e-5)
    assert factor.tolist()[:2] == [1.0, 1.0]
    assert factor[2].item() == pytest.approx(1e-5)  # sqrt(1e-12) = 1e-6, clamped up
    assert factor[3].item() == pytest.approx(2.0)
    assert bool(torch.isfinite(factor).all())


def test_alpha_one_flattens_activations_and_alpha_zero_flattens_weights() -> None:
    loaded, scales = _calibrated("tiny:llama")
    result = smooth_model(loaded.model, scales, SmoothConfig(alpha=1.0))
    smoothed = smoothed_act_scales(scales, result)
    # alpha 1: s_j = max|X_j|, so every smoothed input channel has max |X| = 1.
    q_in = smoothed.input_channel_amax["model.layers.0.self_attn.q_proj"]
    assert torch.allclose(q_in, torch.ones_like(q_in), rtol=1e-6)

    loaded, scales = _calibrated("tiny:llama")
    smooth_model(loaded.model, scales, SmoothConfig(alpha=0.0))
    # alpha 0: s_j = 1 / max|W_j| over q, k, v: the group's column max becomes 1.
    attn = loaded.model.model.layers[0].self_attn
    stacked = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]).abs().amax(dim=0)
    assert torch.allclose(stacked, torch.ones_like(stacked), rtol=1e-6)


def test_smoothed_statistics_equal_a_recalibration_of_the_smoothed_model() -> None:
    loaded, scales = _calibrated("tiny:llama")
    result = smooth_model(loaded.model, scales, SmoothConfig(alpha=0.6, include_optional=True))
    derived = smoothed_act_scales(scales, result)
    measured = calibrate(loaded, IDS, progress=False)
    for name in measured.linears:
        # Same activations up to float32 rounding of the folded products.
        assert torch.allclose(derived.input_channel_amax[name], measured.input_channel_amax[name], rtol=1e-4)
        assert torch.isclose(derived.input_amax[name], measured.input_amax[name], rtol=1e-4)
        assert torch.isclose(derived.output_amax[name], measured.output_amax[name], rtol=1e-4)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan"), "0.5", None])
def test_alpha_outside_unit_interval_is_a_config_error(alpha) -> None:
    with pytest.raises(ConfigError, match="alpha"):
        SmoothConfig.create(alpha=alpha)


def test_overrides_parse_and_last_match_wins() -> None:
    config = SmoothConfig(
        alpha=0.5, overrides=(parse_override("layers.*.up_down=0.8"), parse_override("layers.1.*=auto"))
    )
    assert config.alpha_for("layers.0.attn_in") == 0.5
    assert config.alpha_for("layers.0.up_down") == 0.8
    assert config.alpha_for("layers.1.up_down") == "auto"
    assert config.needs_search
    for bad in ("layers.0.attn_in", "=0.5", "layers.*=1.2", "layers.*=high"):
        with pytest.raises(ConfigError):
            parse_override(bad)
    with pytest.raises(ConfigError, match="grid"):
        AlphaSearchConfig.create(grid=(0.5, 2.0))


def test_auto_alpha_needs_activations() -> None:
    loaded, scales = _calibrated("tiny:llama")
    with pytest.raises(ConfigError, match="auto"):
        smooth_model(loaded.model, scales, SmoothConfig(alpha="auto"))


def test_alpha_search_error_matches_direct_computation_and_picks_the_minimum() -> None:
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(64, 32, generator=generator)
    x[:, 3] *= 50  # outlier channel: per-tensor INT8 without smoothing crushes the others
    weights = [torch.randn(16, 32, generator=generator), torch.randn(8, 32, generator=generator)]
    act_amax = x.abs().amax(dim=0)
    group = SmoothGroup("g", "prev", "rmsnorm", ("a", "b"))
    config = AlphaSearchConfig(grid=(0.0, 0.5, 1.0), act_mode="per_tensor")
    best, errors = search_alpha(x, weights, act_amax, group, config)
    assert best == min(errors, key=errors.__getitem__)
    # alpha 0.5 by hand: smooth, per-tensor quantize both sides, sum of output MSEs.
    weight_amax = torch.cat(weights).abs().amax(dim=0)
    s = (act_amax.double().sqrt() / weight_amax.double().sqrt()).float()
    xs = x / s
    amax = xs.abs().max()
    x_fq = torch.clamp(torch.round(xs * (127 / amax)), -127, 127) * (amax / 127)
    manual = 0.0
    for w in weights:
        ws = w * s
        w_amax = ws.abs().amax(dim=1, keepdim=True)
        w_fq = torch.clamp(torch.round(ws * (127 / w_amax)), -127, 127) * (w_amax / 127)
        manual += float((x_fq @ w_fq.t() - x @ w.t()).pow(2).mean())
    assert errors[0.5] == pytest.approx(manual, rel=1e-4)
    assert errors[0.5] < errors[0.0]  # smoothing helps an outlier channel under per-tensor quantization
    direct = quantized_output_error(
        x, weights, [x @ w.t() for w in weights], torch.ones(32), act_mode="per_tensor", act_amax=act_amax
    )
    assert direct > errors[0.5]


def test_auto_alpha_end_to_end_reports_grid_alphas() -> None:
    loaded, scales = _calibrated("tiny:llama")
    reference = reference_outputs(loaded.model, IDS)
    config = SmoothConfig(alpha="auto", include_optional=True, search=AlphaSearchConfig(grid=(0.3, 0.6, 0.9)))
    groups = smoothing_groups(loaded.model, include_optional=True)
    inputs = collect_group_inputs(loaded.model, IDS, groups, samples=2, tokens_per_sample=16, progress=False)
    assert all(inputs[g.name].shape[0] == 32 for g in groups)
    result = smooth_model(loaded.model, scales, config, search_inputs=inputs)
    assert set(result.alphas) == {g.name for g in groups}
    assert set(result.alphas.values()) <= {0.3, 0.6, 0.9}
    assert all(result.alphas[name] == min(e, key=e.__getitem__) for name, e in result.searched.items())
    check_equivalence(loaded.model, IDS, reference, rtol=EQUIVALENCE_RTOL)


def test_smoothed_artifact_round_trip(tmp_path: Path) -> None:
    loaded, scales = _calibrated("tiny:llama")
    source_fingerprint = loaded.fingerprint()
    config = SmoothConfig(alpha=0.5, include_optional=True)
    result = smooth_model(loaded.model, scales, config)
    expected = reference_outputs(loaded.model, IDS)
    out = save_smoothed(
        tmp_path / "smoothed",
        loaded,
        result,
        smoothed_act_scales(scales, result),
        config=config,
        source_fingerprint=source_fingerprint,
    )
    extra = json.loads((out / "manifest.json").read_text())["extra"]
    assert extra["model_fingerprint"] == loaded.fingerprint() != extra["source_model_fingerprint"]
    assert extra["source_model_fingerprint"] == source_fingerprint
    assert extra["alphas"] == result.alphas and extra["include_optional"] is True
    reloaded, reloaded_scales = load_smoothed(out)
    assert reloaded.fingerprint() == loaded.fingerprint()
    assert torch.equal(reference_outputs(reloaded.model, IDS), expected)
    factors = read_safetensors(out / FACTORS_FILE)
    assert factors.keys() == result.factors.keys()
    assert all(torch.equal(factors[k], result.factors[k]) for k in factors)
    name = "model.layers.1.mlp.down_proj"
    assert torch.equal(
        reloaded_scales.input_channel_amax[name], smoothed_act_scales(scales, result).input_channel_amax[name]
    )

    (out / "model.safetensors").write_bytes((out / "model.safetensors").read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ArtifactError, match="changed"):
        load_smoothed(out)
