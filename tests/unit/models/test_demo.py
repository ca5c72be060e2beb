import math

import pytest

from sq_trt.data import load_slices, tokenize_chunks
from sq_trt.runtime.perplexity import perplexity

pytestmark = pytest.mark.integration


def test_demo_model_is_smollm2_with_finite_perplexity(demo_loaded):
    model = demo_loaded.model
    assert demo_loaded.spec.family == "llama"
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    _, evaluation = load_slices()
    chunks = tokenize_chunks(demo_loaded.tokenizer, evaluation, seq_len=256, max_chunks=2)
    ppl = perplexity(model, chunks, progress=False)
    # A trained 135M model on English prose: far below uniform (vocab 49152) and above 1.
    # DESIGN.md measured 12.74 on a similar slice; random weights would give ~49k.
    assert math.isfinite(ppl) and 3.0 < ppl < 40.0, ppl
