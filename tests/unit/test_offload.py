"""Offloaded calibration and smoothing (one decoder layer in memory) equal the in-memory path exactly."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from sq_trt.artifacts import load_smoothed
from sq_trt.calibrate.stage import calibrate
from sq_trt.errors import ConfigError
from sq_trt.models.loading import load_model
from sq_trt.models.offload import load_offloaded, smooth_offloaded
from sq_trt.models.tiny import byte_tokenizer, tiny_model
from sq_trt.pipeline.recipe import validate_recipe
from sq_trt.smooth.stage import SmoothConfig, save_smoothed, smooth_model, smoothed_act_scales


@pytest.fixture(scope="module")
def checkpoint(module_tmp: Callable[[str], Path]) -> Path:
    path = module_tmp("ckpt")
    tiny_model("llama").save_pretrained(path)
    byte_tokenizer().save_pretrained(path)
    return path


def test_offloaded_model_keeps_decoder_layers_off_memory(checkpoint: Path, tmp_path: Path) -> None:
    loaded = load_offloaded(str(checkpoint), tmp_path / "off")
    layer_weight = loaded.model.model.layers[0].self_attn.q_proj.weight
    assert layer_weight.device.type == "meta"  # streamed from disk by accelerate's hook
    assert loaded.model.model.embed_tokens.weight.device.type == "cpu"


def test_offloaded_calibrate_and_smooth_equal_in_memory(checkpoint: Path, tmp_path: Path) -> None:
    memory = load_model(str(checkpoint))
    offloaded = load_offloaded(str(checkpoint), tmp_path / "off")
    assert offloaded.fingerprint() == memory.fingerprint()
    ids = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(0))

    scales_memory = calibrate(memory, ids, progress=False)
    scales_offloaded = calibrate(offloaded, ids, progress=False)
    for name, amax in scales_memory.input_channel_amax.items():
        # Same weights, same kernels, same order: bit-identical statistics.
        assert torch.equal(amax, scales_offloaded.input_channel_amax[name]), name

    config = SmoothConfig(alpha=0.6, include_optional=True)
    result_memory = smooth_model(memory.model, scales_memory, config)
    result_offloaded = smooth_offloaded(offloaded, scales_offloaded, config)
    assert result_offloaded.factors.keys() == result_memory.factors.keys()
    for name, factor in result_memory.factors.items():
        assert torch.equal(factor, result_offloaded.factors[name]), name
    with torch.no_grad():
        assert torch.equal(memory.model(ids).logits, offloaded.model(ids).logits)
    assert offloaded.fingerprint() == memory.fingerprint()

    save_smoothed(
        tmp_path / "smooth",
        offloaded,
        result_offloaded,
        smoothed_act_scales(scales_offloaded, result_offloaded),
    )
    reloaded, _ = load_smoothed(tmp_path / "smooth")  # checks the weights against the manifest fingerprint
    with torch.no_grad():
        assert torch.equal(reloaded.model(ids).logits, memory.model(ids).logits)


def test_auto_alpha_is_refused_with_offload(checkpoint: Path, tmp_path: Path) -> None:
    offloaded = load_offloaded(str(checkpoint), tmp_path / "off")
    scales = calibrate(offloaded, torch.zeros(1, 8, dtype=torch.long), progress=False)
    with pytest.raises(ConfigError, match="not supported with model.offload"):
        smooth_offloaded(offloaded, scales, SmoothConfig(alpha="auto"))


def test_recipe_refuses_offload_without_a_checkpoint_or_with_auto_alpha() -> None:
    base = {"kind": "pipeline", "name": "t"}
    with pytest.raises(ConfigError, match="has none"):
        validate_recipe({**base, "model": {"source": "tiny:llama", "offload": True}})
    with pytest.raises(ConfigError, match="numeric alphas only"):
        validate_recipe({**base, "model": {"source": "demo", "offload": True}, "smooth": {"alpha": "auto"}})
    with pytest.raises(ConfigError, match="saved Hugging Face checkpoint"):
        load_offloaded("tiny:llama", "unused")
