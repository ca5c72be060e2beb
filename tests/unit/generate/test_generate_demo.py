"""Generation on the demo model (SmolLM2-135M, GQA: 9 query heads over 3 KV heads) from its FP16 --with-past ONNX.

The reference is the float32 PyTorch model. FP16 changes logits by ~1e-3 of
their spread, so the checks are (a) step-by-step logits track the full-sequence
float32 logits (RMS error under 2 % of the logits' RMS, top-1 agreement >= 95 %),
and (b) greedy continuations equal transformers' ``generate`` on most prompts;
where one diverges, the float32 model's two best logits at that step are within
a margin FP16 rounding can flip (the fp16 graph's own error there), which the
test checks instead of hiding the divergence.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.integration

PROMPTS, PROMPT_TOKENS, NEW_TOKENS = 8, 24, 64


@pytest.fixture(scope="module")
def demo_generation(demo_loaded, module_tmp: Callable[[str], Path]):
    """The FP16 generation graph of the demo model (the trace takes 2-4 minutes: done once)."""
    import onnx

    from sq_trt.export.past import export_float_onnx_with_past

    path = module_tmp("demo-gen") / "model.fp16.onnx"
    onnx.save_model(
        export_float_onnx_with_past(demo_loaded.model, demo_loaded.spec, dtype="float16"), str(path)
    )
    return demo_loaded, path


@pytest.fixture(scope="module")
def prompts(demo_loaded) -> list[list[int]]:
    from sq_trt.compare.dataloader import evaluation_slice
    from sq_trt.data import tokenize_chunks

    chunks = tokenize_chunks(
        demo_loaded.tokenizer, evaluation_slice("embedded"), seq_len=PROMPT_TOKENS, max_chunks=PROMPTS * 5
    )
    return [list(map(int, row)) for row in chunks[::5]]  # spread over the held-out text


def test_prefill_and_decode_track_the_full_sequence_float32_logits(demo_generation, prompts):
    from sq_trt.generate.runners import OrtStepRunner

    loaded, path = demo_generation
    runner = OrtStepRunner(path, max_context=256)
    assert (runner.layout.kv_heads, loaded.model.config.num_attention_heads) == (3, 9)
    ids = np.asarray([prompts[0] + prompts[1]])  # 48 tokens: prefill 16, then 32 decode steps
    runner.reset(1)
    steps = np.concatenate(
        [runner.step(ids[:, :16])] + [runner.step(ids[:, t : t + 1]) for t in range(16, 48)], 1
    )
    with torch.no_grad():
        full = loaded.model(input_ids=torch.as_tensor(ids), use_cache=False).logits.numpy()
    rms = np.sqrt(np.mean((steps - full) ** 2)) / np.sqrt(np.mean(full**2))
    agree = np.mean(np.argmax(steps, -1) == np.argmax(full, -1))
    print(
        f"\nSmolLM2 FP16 prefill+decode vs float32 full sequence: rel RMS {rms:.2e}, top-1 agreement {agree:.3f}"
    )
    # Measured rel RMS 6.75e-4, top-1 1.000 (2026-12-02, AVX-512 EPYC, d01d019's closing note). 0.02 is
    # 30x that; W8A8 logits sit ~0.05 off (cosine 0.998-0.999 in compare.md: sqrt(2 (1 - cos))), a
    # misplaced cache entry O(1). 0.95 of 48 positions allows two near-tie flips.
    assert rms < 0.02 and agree >= 0.95


def test_greedy_64_tokens_match_transformers_generate_on_most_prompts(demo_generation, prompts):
    from sq_trt.generate.accuracy import first_divergence
    from sq_trt.generate.loop import generate, teacher_forced_logits
    from sq_trt.generate.runners import OrtStepRunner, TorchStepRunner

    loaded, path = demo_generation
    runner = OrtStepRunner(path, max_context=256)
    reference = TorchStepRunner(loaded.model)
    # transformers generates all prompts in one batch: they are all PROMPT_TOKENS long, so no row is
    # padded and each row is its own greedy decode (measured: the 8 batched continuations equal the
    # 8 one-at-a-time ones token for token; 79 s instead of 132 s on a loaded 2-core machine).
    assert {len(prompt) for prompt in prompts} == {PROMPT_TOKENS}
    batch = torch.tensor(prompts)
    with torch.no_grad():
        all_theirs = loaded.model.generate(
            batch,
            attention_mask=torch.ones_like(batch),
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            min_new_tokens=NEW_TOKENS,
            pad_token_id=loaded.tokenizer.eos_token_id,
        )[:, PROMPT_TOKENS:].tolist()
    matches, unexplained = 0, []
    for prompt, theirs in zip(prompts, all_theirs, strict=True):
        ours = generate(runner, prompt, max_new_tokens=NEW_TOKENS).token_ids
        if ours == theirs:
            matches += 1
            continue
        step = first_divergence(ours, theirs)
        # Both runners read the same prefix up to the divergence: compare their logits there.
        fp32 = teacher_forced_logits(reference, prompt, theirs[: step + 1])[step]
        fp16 = teacher_forced_logits(runner, prompt, theirs[: step + 1])[step]
        top2 = np.sort(fp32)[-2:]
        gap, error = float(top2[1] - top2[0]), float(np.max(np.abs(fp16 - fp32)))
        print(f"  diverges at token {step}: float32 top-2 gap {gap:.4f}, fp16 max logit error {error:.4f}")
        # Arithmetic: each of the two logits moves by at most `error`, so their order flips only if
        # gap <= 2 * error. Measured (2026-12-02/03): the one divergence at gap 0.0021, error 0.0198.
        if gap > 2 * error:
            unexplained.append((step, gap, error))
    print(
        f"\nSmolLM2 greedy {NEW_TOKENS} tokens, FP16 ONNX vs transformers generate (float32): "
        f"{matches}/{len(prompts)} prompts identical"
    )
    # Measured 7/8 identical (2026-12-02, d01d019; 2026-12-03, 606689a); half leaves room for another
    # CPU's near ties, each still checked above. A broken cache or GQA map diverges on every prompt.
    assert matches >= len(prompts) // 2
    assert not unexplained, unexplained
