"""sq_trt.models.adapter: the model kind comes from the config; the body-only forward sees what the full one does."""

from __future__ import annotations

import pytest
import torch

from sq_trt.models import adapter
from sq_trt.models.registry import quantizable_linears
from sq_trt.models.tiny import tiny_model

FAMILIES = ["llama", "qwen2", "opt", "gpt2", "bert"]


@pytest.mark.parametrize("family", FAMILIES)
def test_body_forward_feeds_every_quantized_linear_the_same_input_and_skips_the_head(family: str) -> None:
    model = tiny_model(family).eval()
    modules = dict(model.named_modules())
    names = quantizable_linears(model)
    head = getattr(model, "lm_head", None)
    seen: dict[str, list[torch.Tensor]] = {}

    def record(name: str):
        return lambda _m, inputs, _o: seen.setdefault(name, []).append(inputs[0].clone())

    handles = [modules[n].register_forward_hook(record(n)) for n in names]
    if head is not None:
        handles.append(head.register_forward_hook(record("<head>")))
    ids = torch.randint(0, model.config.vocab_size, (2, 7), generator=torch.Generator().manual_seed(0))
    try:
        with torch.inference_mode():
            adapter.forward(model, ids)
            adapter.forward_body(model, ids)
    finally:
        for h in handles:
            h.remove()
    for name in names:
        full, body = seen[name]
        assert torch.equal(full, body), name
    # The full forward ran the LM head once; the body forward did not run it.
    assert len(seen.get("<head>", [])) == (1 if head is not None else 0)


def test_output_name_follows_the_config_not_the_source() -> None:
    assert adapter.output_name(tiny_model("bert")) == "last_hidden_state"
    assert adapter.output_name(tiny_model("llama").config) == "logits"
