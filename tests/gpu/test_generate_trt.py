"""Generation engines with TensorRT proper on a GPU: prefill/decode profiles, the TensorRT step runner.

Skips here with the reason (``tensorrt`` not importable, or no GPU visible). The
reference is ONNX Runtime on the same FP16 ``--with-past`` graph: the engine must
reproduce its logits at every step (prefill, then one token at a time) and its
greedy continuation.
"""

from __future__ import annotations

import numpy as np
import pytest

from sq_trt.engine.gpu import visible_gpus

pytestmark = pytest.mark.gpu

trt = pytest.importorskip(
    "tensorrt", reason="TensorRT proper is not importable (the `trt` extra / NVIDIA's container)"
)
if not visible_gpus():
    pytest.skip("no GPU visible to the CUDA driver: TensorRT proper builds on a GPU", allow_module_level=True)

from sq_trt.engine.backends import load_tensorrt
from sq_trt.engine.builder import build_engine
from sq_trt.engine.recipe import resolve_settings
from sq_trt.export.stage import ExportConfig, export_model
from sq_trt.generate.loop import generate
from sq_trt.generate.runners import OrtStepRunner
from sq_trt.generate.trt_runner import open_engine_runner
from sq_trt.models.loading import load_model


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen-trt")
    export_model(
        load_model("tiny:llama"), root / "export", config=ExportConfig(encoding="portable", with_past=True)
    )
    settings = resolve_settings(
        {"generation": {"max_batch": 2, "max_input": 32, "max_context": 96}},
        {"onnx": root / "export" / "model.fp16.onnx", "name": "gen", "target": "gpu", "engines_dir": root},
        source="test",
    )
    build_engine(settings, load_tensorrt(), log=lambda _: None)
    return root


def test_engine_steps_match_onnx_runtime(engine):
    runner = open_engine_runner(engine / "gen")
    reference = OrtStepRunner(engine / "export" / "model.fp16.onnx", max_context=96, max_batch=2)
    ids = np.random.default_rng(0).integers(0, 256, (2, 20))
    outputs = []
    for r in (runner, reference):
        r.reset(2)
        rows = [r.step(ids[:, :12])] + [r.step(ids[:, t : t + 1]) for t in range(12, 20)]
        outputs.append(np.concatenate(rows, axis=1))
    np.testing.assert_allclose(outputs[0], outputs[1], atol=3e-2, rtol=0)


def test_engine_greedy_continuation_equals_onnx_runtime_and_refuses_past_the_context(engine):
    from sq_trt.errors import GenerationError

    runner = open_engine_runner(engine / "gen")
    reference = OrtStepRunner(engine / "export" / "model.fp16.onnx", max_context=96)
    prompt = [5, 9, 200, 31, 7]
    assert (
        generate(runner, prompt, max_new_tokens=40).token_ids
        == generate(reference, prompt, max_new_tokens=40).token_ids
    )
    with pytest.raises(GenerationError, match="context of 96"):
        generate(runner, prompt, max_new_tokens=95)
