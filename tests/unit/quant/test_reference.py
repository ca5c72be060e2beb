"""The reference INT8 quantizer against exact arithmetic worked out by hand or with Python integers."""

from __future__ import annotations

import torch

from sq_trt.quant import reference


def test_per_tensor_rounds_half_to_even_and_saturates_like_quantize_linear() -> None:
    # amax 127 makes the scale exactly 1, so x / scale is x itself and every .5 is an exact tie.
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, 127.4, 300.0, -300.0, 0.49, -127.6, -128.5])
    q = reference.quantize_per_tensor(x, 127.0)
    assert q.dtype == torch.int8
    # Saturation is ONNX QuantizeLinear's / TensorRT's [-128, 127]: -127.6 -> -128, -128.5 -> -128 (tie to even).
    assert q.tolist() == [0, 2, 2, 0, -2, -2, 126, 127, 127, -128, 0, -128, -128]


def test_per_tensor_divides_by_the_scale_like_python_floats() -> None:
    # q = round(float32(x) / float32(amax / 127)): one correctly rounded division, checked with
    # Python doubles on float32 values (the float32 quotient of two float32s is the double quotient
    # rounded to float32, so rounding it and then to an integer must agree wherever it is not a tie).
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(4000, generator=generator) * 7
    amax = 5.3
    scale = reference.per_tensor_scale(amax)
    assert float(scale) == float(torch.tensor(amax, dtype=torch.float32) / 127)
    q = reference.quantize_per_tensor(x, amax)
    for value, got in zip(x.tolist(), q.tolist(), strict=True):
        quotient = float(torch.tensor(value / float(scale), dtype=torch.float64).float())
        assert got == max(-128, min(127, round(quotient)))


def test_per_tensor_scale_rounds_through_the_graph_dtype_and_zero_amax_gives_one() -> None:
    half = reference.per_tensor_scale(1.0, torch.float16)
    assert float(half) == float(torch.tensor(1.0 / 127, dtype=torch.float16))
    assert float(half) != float(reference.per_tensor_scale(1.0))  # 1/127 is not a float16 value
    assert float(reference.per_tensor_scale(0.0)) == 1.0
    # A float16 activation quantizes with the float16-rounded scale, as the float16 graph does.
    x = torch.linspace(-2, 2, 101, dtype=torch.float16)
    expected = reference.quantize_per_tensor(x, 1.0, scale_dtype=torch.float16).float() * half
    assert torch.equal(reference.fake_quant_per_tensor(x, 1.0), expected.to(torch.float16))


def test_per_token_scale_is_row_amax_and_rows_are_independent() -> None:
    x = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0], [-4.0, 3.0, 1.0]])
    q, amax = reference.quantize_per_token(x)
    assert amax.squeeze(1).tolist() == [2.0, 0.0, 4.0]
    # Exact expectations: round(x * 127 / amax) with ties to even.
    # Row 0: 127/2 = 63.5 -> 64 (even), -127, 31.75 -> 32; row 2: -127, 95.25 -> 95, 31.75 -> 32.
    assert q.tolist() == [[64, -127, 32], [0, 0, 0], [-127, 95, 32]]
    assert torch.isfinite(reference.fake_quant_per_token(x)).all()
    assert reference.fake_quant_per_token(x)[1].abs().sum() == 0


def test_per_token_matches_python_integer_arithmetic() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(16, 33, generator=generator) * 3
    q, amax = reference.quantize_per_token(x)
    for row, q_row, row_amax in zip(x.tolist(), q.tolist(), amax.squeeze(1).tolist(), strict=True):
        inv = torch.tensor(127.0) / torch.tensor(row_amax)  # the float32 multiplier the reference uses
        for value, got in zip(row, q_row, strict=True):
            scaled = float(torch.tensor(value, dtype=torch.float32) * inv)
            assert got == max(-127, min(127, round(scaled)))  # Python's round() is half to even


def test_weight_per_channel_exact_and_zero_row() -> None:
    weight = torch.tensor([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0], [3.0, 1.5, -0.75]])
    w_q, scale = reference.quantize_weight_per_channel(weight)
    assert w_q.tolist() == [[64, -127, 32], [0, 0, 0], [127, 64, -32]]  # 63.5 -> 64, 31.75 -> 32
    assert torch.equal(scale, torch.tensor([1.0 / 127, 1.0, 3.0 / 127]))
    # Dequantization error is at most half a step per element.
    error = (reference.fake_quant_weight(weight) - weight).abs()
    assert bool((error <= scale[:, None] / 2 + 1e-7).all())


def test_per_tensor_fake_quant_saturates_outliers() -> None:
    x = torch.tensor([10.0, -10.0, 0.3])
    y = reference.fake_quant_per_tensor(x, 1.0)
    step = reference.per_tensor_scale(1.0)  # float32, products below are float32 like the reference's
    expected = torch.tensor([127.0, -128.0, round(0.3 / float(step))]) * step
    assert torch.equal(y, expected)
