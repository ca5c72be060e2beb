"""The calibration hooks' shortcuts (shared input reductions, in-place maxima, one finiteness check at the end)
against a naive recording of every batch, bit for bit."""

from __future__ import annotations

import pytest
import torch

from sq_trt.calibrate.stage import calibrate
from sq_trt.errors import CalibrationError
from sq_trt.models import adapter
from sq_trt.models.loading import load_model
from sq_trt.models.registry import quantizable_linears
from sq_trt.quant.attention import RECORDED, attention_modules, eager_attention_with


@pytest.fixture(scope="module")
def llama():
    return load_model("tiny:llama")


@pytest.fixture(scope="module")
def chunks() -> torch.Tensor:
    return torch.randint(0, 256, (4, 24), generator=torch.Generator().manual_seed(1))


def _naive(loaded, chunks: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every batch's |x| maxima kept, one independent reduction per linear and tensor, maxed at the end."""
    model = loaded.model
    modules = dict(model.named_modules())
    seen: dict[str, list[torch.Tensor]] = {}

    def hook_for(name: str):
        def hook(module, inputs, output) -> None:
            for what, t in (("in", inputs[0]), ("out", output)):
                seen.setdefault(f"{name}.{what}", []).append(t.abs().reshape(-1, t.shape[-1]).amax(dim=0))

        return hook

    names = attention_modules(model)

    def bmm_hook(module, which: str, tensor: torch.Tensor) -> torch.Tensor:
        if which in RECORDED:
            seen.setdefault(f"{names[id(module)]}.{which}", []).append(tensor.abs().amax())
        return tensor

    handles = [modules[n].register_forward_hook(hook_for(n)) for n in quantizable_linears(model)]
    try:
        with torch.inference_mode(), eager_attention_with(model, bmm_hook):
            for row in chunks:
                adapter.forward_body(model, row[None])
    finally:
        for handle in handles:
            handle.remove()
    return {key: torch.stack(values).amax(dim=0) for key, values in seen.items()}


def test_statistics_equal_a_naive_recording_bit_for_bit(llama, chunks) -> None:
    scales = calibrate(llama, chunks, progress=False)
    naive = _naive(llama, chunks)
    for name in scales.linears:
        assert torch.equal(scales.input_channel_amax[name], naive[f"{name}.in"]), name
        assert torch.equal(scales.output_channel_amax[name], naive[f"{name}.out"]), name
        assert torch.equal(scales.input_amax[name], naive[f"{name}.in"].max()), name
        assert torch.equal(scales.output_amax[name], naive[f"{name}.out"].max()), name
    assert scales.bmm_amax, "the Llama family records the attention BMM ranges"
    for key, value in scales.bmm_amax.items():
        assert torch.equal(value, naive[key]), key


def test_linears_reading_one_tensor_get_independent_accumulators(llama, chunks) -> None:
    scales = calibrate(llama, chunks, progress=False)
    q, k, v = (scales.input_channel_amax[f"model.layers.0.self_attn.{p}_proj"] for p in "qkv")
    assert torch.equal(q, k) and torch.equal(q, v)  # the same input tensor
    assert len({q.data_ptr(), k.data_ptr(), v.data_ptr()}) == 3  # but not one buffer maxed three times


def test_non_finite_values_in_a_late_batch_only_still_name_the_layer(chunks) -> None:
    # A token absent from the first batches is poisoned and appears only in the last sample: the
    # first batches are finite, so only the check after the last batch can catch it.
    loaded = load_model("tiny:llama")
    token = next(t for t in range(loaded.model.config.vocab_size) if not bool((chunks[:-1] == t).any()))
    with torch.no_grad():
        loaded.model.model.embed_tokens.weight[token] = float("nan")
    poisoned = chunks.clone()
    poisoned[-1, 5] = token
    with pytest.raises(CalibrationError, match=r"model\.layers\.0\.self_attn\.q_proj"):
        calibrate(loaded, poisoned, progress=False)
    # The hooks are removed even after the error: the model runs plain again.
    with torch.inference_mode():
        adapter.forward_body(loaded.model, chunks[:1])
    assert not any(m._forward_hooks for m in loaded.model.modules())
