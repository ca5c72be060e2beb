"""The export's memory-saving paths give the same tensors and files as the plain ones."""

from __future__ import annotations

import copy

import pytest
import torch

from sq_trt.export.onnx_export import model_in_dtype
from sq_trt.models.loading import load_model


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_fp16_copy_equals_deepcopy_then_cast(family: str) -> None:
    loaded = load_model(f"tiny:{family}")
    model = loaded.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cast = model_in_dtype(model, "float16")
    reference = copy.deepcopy(model).to(torch.float16)

    got, want = cast.state_dict(), reference.state_dict()
    assert got.keys() == want.keys()
    for key in want:
        assert got[key].dtype == want[key].dtype, key
        assert torch.equal(got[key], want[key]), key
    got_buffers, want_buffers = dict(cast.named_buffers()), dict(reference.named_buffers())
    assert {k: v.dtype for k, v in got_buffers.items()} == {k: v.dtype for k, v in want_buffers.items()}
    # The source model is untouched, and the copy shares no storage with it.
    for key, value in model.state_dict().items():
        assert value.dtype == torch.float32 or not value.is_floating_point()
        assert torch.equal(value, before[key]), key
    source_ptrs = {p.data_ptr() for p in model.parameters()}
    assert not source_ptrs & {p.data_ptr() for p in cast.parameters()}
    # Tied weights stay tied (one tensor), as deepcopy keeps them.
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert (cast.get_output_embeddings().weight is cast.get_input_embeddings().weight) == tied
    assert not cast.training


def test_same_dtype_is_the_model_itself() -> None:
    loaded = load_model("tiny:llama")
    assert model_in_dtype(loaded.model, "float32") is loaded.model
