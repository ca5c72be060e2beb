"""Generation graphs (export --with-past) and the decode loop, on tiny random models through ONNX Runtime.

The reference is the PyTorch model's *full-sequence* forward pass (no cache):
prefill + decode through the exported graph must reproduce its logits at every
position. Tolerances:

* float32 graphs: the same float32 arithmetic in other kernels (ONNX Runtime's
  MatMul/Softmax, another summation order), so differences are float32 rounding
  of logits of magnitude ~1: ~1e-6; ``atol=1e-4`` leaves two orders of margin and
  still catches any wrong position, mask or cache slice (those change logits by ~1e-1).
* float16 graphs against the float32 model: every weight and activation is rounded
  to float16 (unit roundoff 2^-11 = 4.9e-4) through ~10 ops per layer, so the
  logits' error is a few 1e-3 relative to their spread; the bound is the RMS error
  under 2 % of the logits' RMS, and the float16 graph run full-sequence must agree
  with itself run step by step to within float16 rounding (``atol=2e-2`` on logits
  of magnitude ~1: a few fp16 ulps), since only the order of the cached and new
  keys' reductions differs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sq_trt.errors import GenerationError, UnsupportedArchitectureError
from sq_trt.export.past import export_float_onnx_with_past
from sq_trt.generate.loop import generate, teacher_forced_logits
from sq_trt.generate.runners import OrtStepRunner, TorchStepRunner, layout_from_io
from sq_trt.generate.sampling import Sampler, SamplingConfig
from sq_trt.models.cache import cache_layout
from sq_trt.models.loading import load_model

FAMILIES = ("llama", "mistral", "qwen2", "opt", "gpt2")
TOKENS = 12  # prompt 7 + 5 decode steps
PROMPT = 7


def _export(tmp_path, family: str, dtype: str):
    import onnx

    loaded = load_model(f"tiny:{family}")
    path = tmp_path / f"{family}.{dtype}.onnx"
    onnx.save_model(export_float_onnx_with_past(loaded.model, loaded.spec, dtype=dtype), str(path))
    return loaded, path


def _stepwise(runner, ids: np.ndarray, prompt: int) -> np.ndarray:
    """Logits of every position: one prefill of ``prompt`` tokens, then one token per step."""
    runner.reset(ids.shape[0])
    rows = [runner.step(ids[:, :prompt])]
    for t in range(prompt, ids.shape[1]):
        rows.append(runner.step(ids[:, t : t + 1]))
    return np.concatenate(rows, axis=1)


@pytest.fixture(scope="module", params=FAMILIES)
def fp32_export(request, tmp_path_factory):
    return _export(tmp_path_factory.mktemp("past"), request.param, "float32")


def test_prefill_and_decode_reproduce_full_sequence_logits_fp32(fp32_export):
    loaded, path = fp32_export
    torch.manual_seed(3)
    ids = torch.randint(0, 256, (2, TOKENS))
    with torch.no_grad():
        full = loaded.model(input_ids=ids, use_cache=False).logits.numpy()
    runner = OrtStepRunner(path, max_context=64, max_batch=2)
    steps = _stepwise(runner, ids.numpy(), PROMPT)
    assert steps.shape == full.shape
    np.testing.assert_allclose(steps, full, atol=1e-4, rtol=0)
    # The cache the runner holds is the model's own keys/values (transformers' cache, same positions).
    torch_runner = TorchStepRunner(loaded.model, max_batch=2)
    torch_steps = _stepwise(torch_runner, ids.numpy(), PROMPT)
    np.testing.assert_allclose(torch_steps, full, atol=1e-4, rtol=0)
    layout = cache_layout(loaded.model)
    ours = runner.cache()
    assert len(ours) == 2 * layout.layers and ours[0].shape == layout.shape(2, TOKENS)
    theirs = torch_runner._cache.layers
    np.testing.assert_allclose(ours[0], theirs[0].keys.numpy(), atol=1e-5)
    np.testing.assert_allclose(ours[-1], theirs[-1].values.numpy(), atol=1e-5)


def test_gqa_cache_has_the_kv_heads_not_the_query_heads(fp32_export):
    loaded, path = fp32_export
    runner = OrtStepRunner(path, max_context=16)
    config = loaded.model.config
    expected = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    assert runner.layout.kv_heads == expected
    if loaded.spec.family == "llama":
        assert runner.layout.kv_heads < config.num_attention_heads  # the tiny Llama family is GQA (2 of 4)


def test_cache_arenas_are_allocated_once_and_written_in_place(fp32_export):
    _, path = fp32_export
    runner = OrtStepRunner(path, max_context=32)
    pointers = [a.ctypes.data for arena in runner._arenas for a in arena]
    runner.reset(1)
    runner.step(np.arange(5)[None])
    first = runner.cache()[0].copy()
    runner.step(np.array([[7]]))
    assert [a.ctypes.data for arena in runner._arenas for a in arena] == pointers
    # The present of step 2 starts with the past of step 1, and both live inside the arenas.
    np.testing.assert_array_equal(runner.cache()[0][:, :, :5], first)
    assert any(np.shares_memory(runner.cache()[0], a) for arena in runner._arenas for a in arena)


@pytest.mark.parametrize("family", ["llama", "opt"])
def test_fp16_graph_tracks_the_fp32_model_and_itself(tmp_path, family):
    loaded, path = _export(tmp_path, family, "float16")
    torch.manual_seed(4)
    ids = torch.randint(0, 256, (1, TOKENS))
    with torch.no_grad():
        full = loaded.model(input_ids=ids, use_cache=False).logits.numpy()
    runner = OrtStepRunner(path, max_context=64)
    assert runner.dtype == "float16"
    steps = _stepwise(runner, ids.numpy(), PROMPT)
    rms = np.sqrt(np.mean((steps - full) ** 2)) / np.sqrt(np.mean(full**2))
    assert rms < 0.02, rms
    runner.reset(1)
    whole = runner.step(ids.numpy())
    np.testing.assert_allclose(steps, whole, atol=2e-2, rtol=0)


def test_greedy_loop_matches_transformers_generate_and_the_torch_runner(fp32_export):
    loaded, path = fp32_export
    prompt = [5, 17, 200, 3, 99]
    eos = loaded.model.generation_config.eos_token_id
    eos = eos[0] if isinstance(eos, list) else eos
    with torch.no_grad():
        expected = loaded.model.generate(
            torch.tensor([prompt]), max_new_tokens=10, do_sample=False, pad_token_id=0
        )[0, len(prompt) :].tolist()
    ort = generate(OrtStepRunner(path, max_context=64), prompt, max_new_tokens=10, eos_token_id=eos)
    ref = generate(TorchStepRunner(loaded.model), prompt, max_new_tokens=10, eos_token_id=eos)
    assert ort.token_ids == expected == ref.token_ids
    assert ort.prefill_s > 0 and (len(ort.token_ids) == 1 or ort.decode_tokens_per_s > 0)


def test_sampling_is_seeded_and_identical_across_runners(fp32_export):
    loaded, path = fp32_export
    config = SamplingConfig(temperature=0.8, top_k=50, top_p=0.95, seed=7)
    a = generate(OrtStepRunner(path, max_context=64), [1, 2, 3], max_new_tokens=12, sampling=config)
    b = generate(TorchStepRunner(loaded.model), [1, 2, 3], max_new_tokens=12, sampling=config)
    other = generate(
        OrtStepRunner(path, max_context=64),
        [1, 2, 3],
        max_new_tokens=12,
        sampling=SamplingConfig(0.8, 50, 0.95, 8),
    )
    assert a.token_ids == b.token_ids
    assert a.token_ids != other.token_ids  # the seed matters (12 draws over ~50 tokens)


def test_teacher_forced_logits_predict_each_continuation_token(fp32_export):
    _, path = fp32_export
    runner = OrtStepRunner(path, max_context=64)
    result = generate(runner, [4, 8, 15, 16], max_new_tokens=6, keep_logits=True)
    forced = teacher_forced_logits(runner, [4, 8, 15, 16], result.token_ids)
    assert forced.shape[0] == len(result.token_ids)
    np.testing.assert_allclose(forced, np.stack(result.step_logits), atol=1e-4)


def test_sampler_matches_an_independent_softmax():
    logits = np.array([2.0, 1.0, 0.5, -1.0, 0.0], dtype=np.float32)
    assert Sampler(SamplingConfig())(logits) == 0
    assert Sampler(SamplingConfig(temperature=1.0, top_k=1))(logits) == 0
    assert Sampler(SamplingConfig(temperature=1.0, top_p=0.01))(logits) == 0
    sampler = Sampler(SamplingConfig(temperature=0.7, seed=0))
    draws = np.bincount([sampler(logits) for _ in range(20000)], minlength=5) / 20000
    expected = np.exp(logits / 0.7) / np.exp(logits / 0.7).sum()
    np.testing.assert_allclose(draws, expected, atol=0.015)
    top2 = Sampler(SamplingConfig(temperature=1.0, top_k=2, seed=1))
    assert {top2(logits) for _ in range(200)} == {0, 1}


def test_bad_inputs_are_one_line_generation_errors(fp32_export):
    _, path = fp32_export
    runner = OrtStepRunner(path, max_context=8, max_batch=1)
    with pytest.raises(GenerationError, match="past the context of 8"):
        generate(runner, list(range(6)), max_new_tokens=4)
    with pytest.raises(GenerationError, match="over the runner's maximum of 1"):
        runner.reset(2)
    layout = runner.layout
    good = [np.zeros(layout.shape(1, 3), dtype=np.float32) for _ in range(2 * layout.layers)]
    runner.reset(1)
    runner.set_cache(good)
    assert runner.past_len == 3
    bad_shape = [*good[:-1], np.zeros((1, layout.kv_heads + 1, 3, layout.head_dim), dtype=np.float32)]
    with pytest.raises(GenerationError, match="has shape"):
        runner.set_cache(bad_shape)
    with pytest.raises(GenerationError, match="has dtype float16"):
        runner.set_cache([g.astype(np.float16) for g in good])
    with pytest.raises(GenerationError, match="expected"):
        runner.set_cache(good[:-1])
    for exc in (GenerationError,):
        try:
            runner.set_cache(bad_shape)
        except exc as err:
            assert "\n" not in str(err)


def test_a_graph_without_a_cache_is_refused(tmp_path):
    with pytest.raises(GenerationError, match="export --with-past"):
        layout_from_io([("input_ids", "tensor(int64)", ["b", "s"])], ["logits"])
    with pytest.raises(UnsupportedArchitectureError, match="no KV cache"):
        cache_layout(load_model("tiny:bert").model)


def test_cli_generate_json_and_errors(fp32_export, capsys):
    from sq_trt.cli import main

    loaded, path = fp32_export
    code = main(
        [
            "generate",
            "--onnx",
            str(path),
            "--tokenizer",
            "tiny:llama",
            "--max-context",
            "64",
            "--prompt",
            "hello",
            "--max-new-tokens",
            "5",
            "--json",
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    (result,) = out["results"]
    expected = generate(TorchStepRunner(loaded.model), result["prompt_ids"], max_new_tokens=5)
    assert result["token_ids"] == expected.token_ids and len(result["token_ids"]) == 5
    code = main(
        [
            "generate",
            "--onnx",
            str(path),
            "--tokenizer",
            "tiny:llama",
            "--max-context",
            "8",
            "--prompt",
            "a prompt far too long",
            "--max-new-tokens",
            "5",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and "past the context of 8" in err and "\n" not in err


def test_cli_streams_tokens_from_a_prompts_file_and_the_torch_reference(fp32_export, tmp_path, capsys):
    from sq_trt.cli import main

    loaded, path = fp32_export
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "ab"}\n{"prompt": "xyz"}\n')
    family = loaded.spec.family if loaded.spec.family != "llama" else loaded.model.config.model_type
    common = ["--tokenizer", f"tiny:{family}", "--prompts", str(prompts), "--max-new-tokens", "4"]
    assert main(["generate", "--onnx", str(path), "--max-context", "32", *common, "--json"]) == 0
    onnx_results = json.loads(capsys.readouterr().out)["results"]
    assert main(["generate", "--model", f"tiny:{family}", *common[2:], "--json"]) == 0
    torch_results = json.loads(capsys.readouterr().out)["results"]
    assert [r["token_ids"] for r in onnx_results] == [r["token_ids"] for r in torch_results]
    assert main(["generate", "--onnx", str(path), "--max-context", "32", *common]) == 0
    printed = capsys.readouterr().out
    # Streaming: each prompt, then its continuation's text as decoded, then the rates line.
    for result in onnx_results:
        assert result["prompt"] + result["text"] in printed
    assert printed.count("tok/s decode]") == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "no prompt key"}\n')
    assert main(["generate", "--onnx", str(path), "--max-context", "32", "--prompts", str(bad)]) == 1
    assert 'expected an object with a "prompt" string' in capsys.readouterr().err
