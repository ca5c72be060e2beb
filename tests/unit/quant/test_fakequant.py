"""W8A8 fake quant against an independent integer GEMM, and module replacement per family."""

from __future__ import annotations

import pytest
import torch

from sq_trt.errors import ConfigError
from sq_trt.models.loading import load_model
from sq_trt.models.registry import quantizable_linears
from sq_trt.quant.fakequant import W8A8Linear, apply_fake_quant


def _int_reference(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, amax_x: torch.Tensor, act_mode: str
) -> torch.Tensor:
    """Integer GEMM with int64 accumulation, then the two scales: what an INT8 engine computes.

    Per token: ``x * (127 / amax_row)`` (the plugin); per tensor: ``x / (amax / 127)`` saturated
    to [-128, 127] (ONNX QuantizeLinear / TensorRT IQuantizeLayer).
    """
    if act_mode == "per_token":
        x_q = torch.clamp(torch.round(x * (127.0 / amax_x.clamp(min=1e-30))), -127, 127).long()
    else:
        x_q = torch.clamp(torch.round(x / (amax_x / 127)), -128, 127).long()
    w_amax = weight.abs().amax(dim=1, keepdim=True)
    w_q = torch.clamp(torch.round(weight * (127.0 / w_amax)), -127, 127).long()
    accumulated = x_q @ w_q.t()  # exact integers
    return accumulated.double() * (amax_x.double() / 127) * (w_amax.double().t() / 127) + bias.double()


@pytest.mark.parametrize("act_mode", ["per_token", "per_tensor"])
def test_w8a8_linear_equals_integer_gemm(act_mode: str) -> None:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(3, 7, 48, generator=generator)
    x[..., 5] *= 20  # an outlier channel
    weight = torch.randn(24, 48, generator=generator)
    bias = torch.randn(24, generator=generator)
    static = torch.tensor(0.8 * float(x.abs().max()))  # below the true max: exercises saturation
    layer = W8A8Linear("l", weight, bias, act_mode=act_mode, input_amax=static)  # type: ignore[arg-type]
    amax_x = x.abs().amax(dim=-1, keepdim=True) if act_mode == "per_token" else static
    expected = _int_reference(x, weight, bias, amax_x, act_mode)
    actual = layer(x).double()
    # float32 accumulation of 48 products of magnitude <= |x|max*|w|max: relative error ~48 * 6e-8.
    assert torch.allclose(actual, expected, rtol=1e-5, atol=1e-4 * float(expected.abs().max()))
    assert layer.weight_int8.dtype == torch.int8 and layer.weight_int8.abs().max() <= 127


def test_per_tensor_without_amax_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="input_amax"):
        W8A8Linear("l", torch.ones(2, 2), None, act_mode="per_tensor")
    with pytest.raises(ConfigError, match="act_mode"):
        W8A8Linear("l", torch.ones(2, 2), None, act_mode="per_row")  # type: ignore[arg-type]


@pytest.mark.parametrize("family", ["llama", "gpt2", "opt"])
def test_apply_fake_quant_replaces_every_linear_and_stays_close(family: str) -> None:
    loaded = load_model(f"tiny:{family}")
    ids = torch.randint(0, 256, (1, 24), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        before = loaded.model(input_ids=ids).logits
    names = apply_fake_quant(loaded.model, None, act_mode="per_token", exclude=["*.0.*"])
    expected = [name for name in quantizable_linears(loaded.model) if ".0." not in name]
    assert names == expected
    modules = dict(loaded.model.named_modules())
    assert all(isinstance(modules[name], W8A8Linear) for name in names)
    with torch.inference_mode():
        after = loaded.model(input_ids=ids).logits
    # W8A8 on a 2-layer model perturbs logits by a few percent, not more; equal logits would mean no quant.
    relative = float((after - before).abs().max() / before.abs().max())
    assert 0 < relative < 0.1


def test_gpt2_conv1d_weight_is_transposed() -> None:
    loaded = load_model("tiny:gpt2")
    conv = loaded.model.transformer.h[0].mlp.c_fc  # Conv1D, weight [in, out]
    x = torch.randn(5, conv.weight.shape[0], generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        expected = _int_reference(x, conv.weight.t(), conv.bias, x.abs().amax(-1, keepdim=True), "per_token")
    apply_fake_quant(loaded.model, None, act_mode="per_token")
    with torch.inference_mode():
        actual = loaded.model.transformer.h[0].mlp.c_fc(x).double()
    assert torch.allclose(actual, expected, rtol=1e-5, atol=1e-4 * float(expected.abs().max()))


def test_per_tensor_needs_scales() -> None:
    loaded = load_model("tiny:llama")
    with pytest.raises(ConfigError, match="input_amax"):
        apply_fake_quant(loaded.model, None, act_mode="per_tensor")


def test_two_calls_give_mixed_modes() -> None:
    loaded = load_model("tiny:llama")
    scales = calibrate_tiny(loaded)
    first = apply_fake_quant(loaded.model, scales, act_mode="per_tensor", exclude=["*.down_proj"])
    second = apply_fake_quant(loaded.model, scales, act_mode="per_token")
    assert second == [name for name in quantizable_linears(loaded.model) if name.endswith("down_proj")]
    modules = dict(loaded.model.named_modules())
    assert {modules[name].act_mode for name in first} == {"per_tensor"}
    assert {modules[name].act_mode for name in second} == {"per_token"}


def calibrate_tiny(loaded):
    from sq_trt.calibrate.stage import calibrate

    return calibrate(
        loaded, torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0)), progress=False
    )
