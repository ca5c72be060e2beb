import pytest
import torch

from sq_trt.errors import UnsupportedArchitectureError
from sq_trt.models.registry import find_spec, quantizable_linears, smoothing_groups, supported_architectures
from sq_trt.models.tiny import TINY_FAMILIES, tiny_model


@pytest.fixture(scope="module", params=TINY_FAMILIES)
def model(request):
    return tiny_model(request.param)


def test_every_named_module_exists_with_the_right_type(model):
    modules = dict(model.named_modules())
    layout = find_spec(model).weight_layout
    names = quantizable_linears(model)
    assert len(names) == len(find_spec(model).quantized) * model.config.num_hidden_layers
    for name in names:
        module = modules[name]
        assert hasattr(module, "weight") and module.weight.dim() == 2
        assert isinstance(module, torch.nn.Linear) == (layout == "linear"), name
    for group in smoothing_groups(model, include_optional=True):
        assert group.prev in modules and all(lin in modules for lin in group.linears)
        assert set(group.linears) <= set(names)


def test_groups_feed_exactly_the_listed_linears(model):
    """A hook check: each group's prev output is bitwise the input of each of its linears."""
    modules = dict(model.named_modules())
    seen: dict[str, torch.Tensor] = {}
    hooks = []
    groups = smoothing_groups(model, include_optional=True)
    for group in groups:
        hooks.append(modules[group.prev].register_forward_hook(lambda m, i, o, n=group.prev: seen.__setitem__(n, o)))
        for lin in group.linears:
            hooks.append(
                modules[lin].register_forward_hook(lambda m, i, o, n=lin: seen.__setitem__(n + ".in", i[0]))
            )
    with torch.no_grad():
        model(input_ids=torch.randint(0, 256, (1, 12)))
    for hook in hooks:
        hook.remove()
    for group in groups:
        for lin in group.linears:
            x_in = seen[lin + ".in"]
            if group.prev_kind == "linear":
                # Attention mixes tokens (v->o) and the MLP multiplies (up->down): the input is not the
                # prev output itself, but its channels map one-to-one (checked by smoothing equivalence).
                assert x_in.shape[-1] == seen[group.prev].shape[-1] * group.repeat
            else:
                assert torch.equal(seen[group.prev], x_in), (group.name, lin)


def test_llama_family_groups():
    model = tiny_model("llama")
    names = [g.name for g in smoothing_groups(model)]
    assert names == ["layers.0.attn_in", "layers.0.mlp_in", "layers.1.attn_in", "layers.1.mlp_in"]
    v_o = next(g for g in smoothing_groups(model, include_optional=True) if g.name.endswith("v_o"))
    assert (v_o.repeat, v_o.head_dim) == (2, 16)  # 4 heads over 2 kv heads, 64 / 4


def test_bert_has_no_norm_fold():
    assert all(g.prev_kind == "linear" for g in smoothing_groups(tiny_model("bert"), include_optional=True))


def test_unsupported_architecture_names_the_supported_ones():
    import transformers

    config = transformers.T5Config(d_model=32, num_layers=1, num_heads=2, d_ff=64, vocab_size=100)
    with pytest.raises(UnsupportedArchitectureError, match="'t5' is not supported.*llama.*opt"):
        find_spec(config)
    assert {"llama", "mistral", "qwen2", "opt", "gpt2", "bert"} <= set(supported_architectures())
