"""compare: ONNX Runtime runners via Polygraphy, saved results round trip, replay, refusals, data, layer ranking."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from sq_trt.artifacts.comparison import COMPARISON_FILE, load_comparison, load_iterations
from sq_trt.compare.dataloader import EvalDataLoader, evaluation_slice
from sq_trt.compare.run import run_comparison
from sq_trt.compare.runners import make_runner, parse_runner_spec
from sq_trt.errors import ArtifactError, ConfigError, DataError

VOCAB, DIM = 48, 16


def _write_onnx(path: Path, embedding: np.ndarray, head: np.ndarray) -> Path:
    """A minimal 'language model': logits = embedding[input_ids] @ head, dynamic batch and sequence."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["E", "input_ids"], ["h"]),
            helper.make_node("MatMul", ["h", "W"], ["logits"]),
        ],
        "tiny_lm",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", head.shape[1]])],
        [numpy_helper.from_array(embedding, "E"), numpy_helper.from_array(head, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def lm_files(module_tmp: Callable[[str], Path]) -> dict[str, object]:
    rng = np.random.default_rng(0)
    root = module_tmp("onnx")
    embedding = rng.normal(size=(VOCAB, DIM)).astype(np.float32)
    head = rng.normal(size=(DIM, VOCAB)).astype(np.float32)
    noisy = (head + rng.normal(scale=0.05, size=head.shape)).astype(np.float32)
    return {
        "E": embedding,
        "W": head,
        "W_noisy": noisy,
        "base": _write_onnx(root / "base.onnx", embedding, head),
        "cand": _write_onnx(root / "cand.onnx", embedding, noisy),
        "other_vocab": _write_onnx(root / "other.onnx", embedding, head[:, : VOCAB // 2].copy()),
    }


def _loader(num: int = 6, seq: int = 10, batch: int = 2) -> EvalDataLoader:
    ids = np.random.default_rng(3).integers(0, VOCAB, size=(num, seq))
    return EvalDataLoader(ids, batch_size=batch)


def _runners(files: dict[str, object], *names: str) -> list[object]:
    return [make_runner(parse_runner_spec(f"{name}={files[name]}")) for name in names]


def test_onnx_comparison_matches_numpy_reference(lm_files: dict[str, object], tmp_path: Path) -> None:
    loader = _loader()
    result = run_comparison(_runners(lm_files, "base", "cand"), "base", loader=loader, progress=False)
    ids = loader.chunks
    base = lm_files["E"][ids] @ lm_files["W"]  # type: ignore[index]
    cand = lm_files["E"][ids] @ lm_files["W_noisy"]  # type: ignore[index]
    summary = result.metrics["cand"]["summary"]
    # ORT's float32 MatMul vs numpy's: same math, different summation order (~1e-6 relative).
    assert summary["abs_max"] == pytest.approx(np.abs(cand - base).max(), rel=1e-4)
    assert summary["abs_mean"] == pytest.approx(np.abs(cand - base).mean(), rel=1e-4)
    assert summary["top1_agreement"] == pytest.approx((cand.argmax(-1) == base.argmax(-1)).mean())
    p = np.exp(base - base.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    q = np.exp(cand - cand.max(-1, keepdims=True))
    q /= q.sum(-1, keepdims=True)
    assert summary["kl_mean"] == pytest.approx((p * np.log(p / q)).sum(-1).mean(), rel=1e-3)
    assert result.iterations == 3 and result.tokens == ids.size
    assert set(result.timing["inference_s"]) == {"base", "cand"}


def test_saved_results_reload_equal(lm_files: dict[str, object], tmp_path: Path) -> None:
    loader = _loader()
    live = run_comparison(
        _runners(lm_files, "base", "cand"),
        "base",
        loader=loader,
        save_dir=tmp_path,
        save_iterations=-1,
        progress=False,
    )
    assert live.saved_iterations == 3
    saved = list(load_iterations(tmp_path))
    assert len(saved) == 3
    feed, run_results = saved[0]
    np.testing.assert_array_equal(feed["input_ids"], loader.chunks[:2])
    expected = lm_files["E"][loader.chunks[:2]] @ lm_files["W"]  # type: ignore[index]
    np.testing.assert_allclose(run_results["base"][0]["logits"], expected, rtol=1e-5, atol=1e-5)

    replayed = run_comparison([], "base", loaded=tmp_path, progress=False)
    assert replayed.metrics == live.metrics  # the same arrays give the same numbers, bit for bit
    assert replayed.tokens == live.tokens


def test_replay_with_a_live_runner_on_the_saved_inputs(lm_files: dict[str, object], tmp_path: Path) -> None:
    run_comparison(
        _runners(lm_files, "base"),
        "base",
        loader=_loader(),
        save_dir=tmp_path,
        save_iterations=-1,
        progress=False,
    )
    # The recorded baseline (e.g. a TensorRT run from a GPU host) against a live candidate here.
    mixed = run_comparison(_runners(lm_files, "cand"), "base", loaded=tmp_path, progress=False)
    direct = run_comparison(_runners(lm_files, "base", "cand"), "base", loader=_loader(), progress=False)
    assert mixed.metrics["cand"]["summary"] == pytest.approx(direct.metrics["cand"]["summary"], rel=1e-9)

    with pytest.raises(ConfigError, match="both in the loaded results and among the live runners"):
        run_comparison(_runners(lm_files, "base"), "base", loaded=tmp_path, progress=False)


def test_first_iterations_only_are_saved(lm_files: dict[str, object], tmp_path: Path) -> None:
    result = run_comparison(
        _runners(lm_files, "base", "cand"),
        "base",
        loader=_loader(),
        save_dir=tmp_path,
        save_iterations=1,
        progress=False,
    )
    assert result.saved_iterations == 1
    assert len(list(load_iterations(tmp_path))) == 1


def test_corrupt_saved_iteration_is_a_clear_error(lm_files: dict[str, object], tmp_path: Path) -> None:
    run_comparison(
        _runners(lm_files, "base", "cand"),
        "base",
        loader=_loader(),
        save_dir=tmp_path,
        save_iterations=1,
        progress=False,
    )
    outputs = min((tmp_path / "iterations").glob("*[0-9].json"))
    outputs.write_text(outputs.read_text()[:200])
    with pytest.raises(ArtifactError, match="corrupt or not a RunResults"):
        list(load_iterations(tmp_path))


def test_missing_iterations_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no saved iterations"):
        list(load_iterations(tmp_path))


def test_mismatched_candidate_shape_is_refused(lm_files: dict[str, object]) -> None:
    with pytest.raises(ArtifactError, match="not run on the same inputs"):
        run_comparison(_runners(lm_files, "base", "other_vocab"), "base", loader=_loader(), progress=False)


def test_missing_baseline_is_refused(lm_files: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="baseline 'fp16' is not among"):
        run_comparison(_runners(lm_files, "base", "cand"), "fp16", loader=_loader(), progress=False)


def test_comparison_json_schema_and_corruption_are_checked(tmp_path: Path) -> None:
    from sq_trt.cli import main

    out = tmp_path / "c"
    argv = [
        "compare",
        "--baseline",
        "torch:tiny:llama",
        "--candidate",
        "same=torch:tiny:llama",
        "--out",
        str(out),
    ]
    assert main([*argv, "--model", "tiny:llama", "--samples", "2", "--seq-len", "16", "--no-progress"]) == 0
    comparison = load_comparison(out)
    assert comparison["baseline"]["name"] == "baseline"
    assert comparison["data"]["role"] == "evaluation"
    path = out / COMPARISON_FILE
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "schema": "sq-trt.comparison/99"}))
    with pytest.raises(ArtifactError, match="expected 'sq-trt.comparison/1'"):
        load_comparison(out)
    path.write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_comparison(out)
    with pytest.raises(ArtifactError, match="has changed since the manifest"):
        load_comparison(out, verify_files=True)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("=model.onnx", "has no name"),
        ("x=model.bin", "expected a .onnx file"),
        ("x=/nonexistent/model.onnx", "does not exist"),
        ("x=torch:", "nothing after"),
    ],
)
def test_runner_spec_refusals(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_runner_spec(text)


def test_runner_spec_kinds(lm_files: dict[str, object]) -> None:
    assert parse_runner_spec("torch:demo", default_name="baseline").describe() == {
        "name": "baseline",
        "kind": "torch",
        "target": "demo",
    }
    assert parse_runner_spec("sq=torch-w8a8-per-tensor:work/smoothed").kind == "torch-w8a8-per-tensor"
    assert parse_runner_spec(f"b={lm_files['base']}").kind == "onnx"


def test_loader_uses_the_held_out_slice_only() -> None:
    from sq_trt.data import check_disjoint, load_slices, tokenize_chunks
    from sq_trt.models.tiny import byte_tokenizer

    tokenizer = byte_tokenizer()
    held_out = evaluation_slice()
    loader = EvalDataLoader.from_text(tokenizer, held_out, seq_len=64, max_chunks=4, batch_size=3)
    assert len(loader) == 2  # 4 chunks in batches of 3: 3 + 1
    feeds = list(loader)
    assert [f["input_ids"].shape for f in feeds] == [(3, 64), (1, 64)]
    import torch

    np.testing.assert_array_equal(
        loader.chunks, tokenize_chunks(tokenizer, held_out, seq_len=64, max_chunks=4).numpy()
    )
    calibration = load_slices()[0]
    check_disjoint(tokenize_chunks(tokenizer, calibration, seq_len=64), torch.from_numpy(loader.chunks))
    with pytest.raises(DataError, match="held-out evaluation slice"):
        EvalDataLoader.from_text(tokenizer, calibration, seq_len=64, max_chunks=4, batch_size=1)


def test_loader_follows_a_static_engine_shape() -> None:
    from polygraphy.common import TensorMetadata

    loader = _loader(num=5, seq=10, batch=4)
    loader.input_metadata = TensorMetadata().add("input_ids", dtype=np.int64, shape=(2, 10))
    feeds = list(loader)
    # The engine takes exactly batch 2: two full batches, the odd chunk is dropped.
    assert [f["input_ids"].shape for f in feeds] == [(2, 10), (2, 10)]
    loader.input_metadata = TensorMetadata().add("input_ids", dtype=np.int64, shape=(-1, 16))
    with pytest.raises(DataError, match="pass --seq-len 16"):
        list(loader)


def test_encoder_inputs_get_neutral_values() -> None:
    from polygraphy.common import TensorMetadata

    loader = _loader(num=2, seq=4, batch=2)
    meta = TensorMetadata().add("input_ids", dtype=np.int64, shape=(-1, -1))
    meta.add("attention_mask", dtype=np.int64, shape=(-1, -1)).add(
        "token_type_ids", dtype=np.int64, shape=(-1, -1)
    )
    loader.input_metadata = meta
    feed = next(iter(loader))
    np.testing.assert_array_equal(feed["attention_mask"], np.ones((2, 4)))
    np.testing.assert_array_equal(feed["token_type_ids"], np.zeros((2, 4)))


@pytest.mark.gpu
def test_plan_runner_matches_onnx_runtime(lm_files: dict[str, object], tmp_path: Path) -> None:
    """A TensorRT engine of the tiny LM agrees with ONNX Runtime through `compare` (GPU hosts only)."""
    pytest.importorskip(
        "tensorrt",
        reason="TensorRT proper (GPU hosts / NVIDIA's container) is not installable on this CPU machine",
    )
    from sq_trt.engine.gpu import visible_gpus

    if not visible_gpus():
        pytest.skip("running a TensorRT engine needs an NVIDIA GPU")
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath, Profile

    profile = Profile().add("input_ids", min=(1, 1), opt=(2, 10), max=(4, 64))
    network = NetworkFromOnnxPath(str(lm_files["base"]), strongly_typed=True)
    plan = tmp_path / "base.plan"
    plan.write_bytes(EngineBytesFromNetwork(network, config=CreateConfig(profiles=[profile]))())
    runners = [
        make_runner(parse_runner_spec(f"ort={lm_files['base']}")),
        make_runner(parse_runner_spec(f"trt={plan}")),
    ]
    result = run_comparison(runners, "ort", loader=_loader(), progress=False)
    # fp32 network; TF32 GEMMs may round the 16-wide dot products to ~1e-3.
    assert result.metrics["trt"]["summary"]["top1_agreement"] >= 0.95
    assert result.metrics["trt"]["summary"]["cosine"] >= 0.9999


def test_cli_load_results_reproduces_the_metrics(tmp_path: Path) -> None:
    from sq_trt.cli import main

    first, replay = tmp_path / "first", tmp_path / "replay"
    argv = ["compare", "--baseline", "fp=torch:tiny:llama", "--candidate", "naive=torch-w8a8:tiny:llama"]
    argv += ["--model", "tiny:llama", "--samples", "3", "--seq-len", "16", "--no-progress"]
    assert main([*argv, "--save-iterations", "-1", "--out", str(first)]) == 0
    assert main(["compare", "--load-results", str(first), "--out", str(replay), "--no-progress"]) == 0
    a, b = load_comparison(first), load_comparison(replay)
    assert a["metrics"] == b["metrics"]
    assert b["baseline"]["name"] == "fp" and b["candidates"][0]["replayed_from"] == str(first)
    assert b["data"]["text_hash"] == a["data"]["text_hash"]


def test_plan_without_tensorrt_names_the_fix(tmp_path: Path) -> None:
    import importlib.util

    from sq_trt.errors import MissingDependencyError

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT proper is installed here; the refusal path is for machines without it")
    plan = tmp_path / "int8.plan"
    plan.write_bytes(b"not an engine")
    with pytest.raises(MissingDependencyError, match="stage `compare` needs the Python module `tensorrt`"):
        make_runner(parse_runner_spec(f"int8={plan}"))


def test_a_bert_directory_is_run_as_an_encoder(tmp_path: Path) -> None:
    """The model's config, not its source string, decides the output: a saved BERT directory gives
    last_hidden_state (a source-string rule treated anything but `tiny:bert` as a decoder)."""
    import torch

    from sq_trt.models.tiny import tiny_model

    model = tiny_model("bert")
    model.save_pretrained(tmp_path / "my-bert")
    runner = make_runner(parse_runner_spec(f"fp=torch:{tmp_path / 'my-bert'}"))
    ids = np.arange(12, dtype=np.int64).reshape(2, 6) % model.config.vocab_size
    with runner:
        out = runner.infer({"input_ids": ids})
    assert list(out) == ["last_hidden_state"]
    with torch.inference_mode():
        expected = model(input_ids=torch.from_numpy(ids)).last_hidden_state.numpy()
    np.testing.assert_allclose(out["last_hidden_state"], expected, rtol=1e-5, atol=1e-5)
