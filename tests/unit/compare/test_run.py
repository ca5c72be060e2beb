"""compare runs one runner at a time: the same metrics as the all-at-once fold, one session alive, saved files intact."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from polygraphy.backend.onnxrt import OnnxrtRunner

from sq_trt.artifacts.comparison import load_iterations
from sq_trt.compare.dataloader import EvalDataLoader
from sq_trt.compare.metrics import LanguageModelAccumulator, OutputErrorAccumulator, fold_next_token_metrics
from sq_trt.compare.run import run_comparison
from sq_trt.compare.runners import make_runner, onnx_session, parse_runner_spec
from sq_trt.compare.spool import OutputSpool, SpooledResult, write_run_results
from sq_trt.errors import ArtifactError

# 4096 logits per row: the metrics' 1M-element blocks hold 256 rows, so a 2 x 300 batch spans 3 blocks.
VOCAB, DIM, SEQ = 4096, 8, 300


def _write_lm(path: Path, embedding: np.ndarray, head: np.ndarray, *, float16: bool) -> Path:
    """logits = embedding[input_ids] @ head (float32 math), optionally cast to a float16 output."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Gather", ["E", "input_ids"], ["h"])]
    if float16:
        nodes += [
            helper.make_node("MatMul", ["h", "W"], ["l32"]),
            helper.make_node("Cast", ["l32"], ["logits"], to=10),
        ]
    else:
        nodes += [helper.make_node("MatMul", ["h", "W"], ["logits"])]
    out_type = TensorProto.FLOAT16 if float16 else TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "tiny_lm",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("logits", out_type, ["batch", "seq", head.shape[1]])],
        [numpy_helper.from_array(embedding, "E"), numpy_helper.from_array(head, "W")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture(scope="module")
def lms(module_tmp: Callable[[str], Path]) -> dict[str, Path]:
    """A float16-output baseline and three candidates (float16 and float32 outputs, growing noise)."""
    rng = np.random.default_rng(0)
    root = module_tmp("streaming")
    embedding = rng.normal(size=(VOCAB, DIM)).astype(np.float32)
    head = rng.normal(size=(DIM, VOCAB)).astype(np.float32)
    files = {"base": _write_lm(root / "base.onnx", embedding, head, float16=True)}
    for index, scale in enumerate((0.02, 0.1, 0.5)):
        noisy = (head + rng.normal(scale=scale, size=head.shape)).astype(np.float32)
        files[f"c{index}"] = _write_lm(root / f"c{index}.onnx", embedding, noisy, float16=index != 1)
    return files


def _loader() -> EvalDataLoader:
    return EvalDataLoader(np.random.default_rng(3).integers(0, VOCAB, size=(5, SEQ)), batch_size=2)


def _runners(files: dict[str, Path], names: list[str]) -> list[Any]:
    return [make_runner(parse_runner_spec(f"{name}={files[name]}")) for name in names]


def _all_at_once(files: dict[str, Path], names: list[str]) -> dict[str, dict[str, float]]:
    """The previous design, as the reference: every runner active, all candidates folded per batch."""
    from polygraphy.comparator import Comparator

    errors = {name: OutputErrorAccumulator() for name in names[1:]}
    lm = {name: LanguageModelAccumulator() for name in names[1:]}
    feeds = list(_loader())
    stream = Comparator.run(_runners(files, names), data_loader=feeds, streaming=True)
    for feed, single in zip(feeds, stream, strict=True):
        base = single[names[0]][0]["logits"]
        for name in names[1:]:
            errors[name].update(base, single[name][0]["logits"])
        pairs = [(lm[name], single[name][0]["logits"]) for name in names[1:]]
        fold_next_token_metrics(base, pairs, feed["input_ids"])
    return {name: {**errors[name].summary(), **lm[name].summary()} for name in names[1:]}


def test_one_at_a_time_gives_the_all_at_once_metrics_bit_for_bit(lms: dict[str, Path]) -> None:
    names = ["base", "c0", "c1", "c2"]
    result = run_comparison(_runners(lms, names), "base", loader=_loader(), progress=False)
    reference = _all_at_once(lms, names)
    assert result.candidates == names[1:]
    for name in names[1:]:
        assert result.metrics[name]["summary"] == reference[name]  # exact equality, every figure
    # The noise grows from c0 to c2, and the metrics see it: they are not all the same number.
    kl = [result.metrics[name]["summary"]["kl_mean"] for name in names[1:]]
    assert 0 < kl[0] < kl[1] < kl[2]
    assert result.iterations == 3 and result.tokens == 5 * SEQ


class _CountingRunner(OnnxrtRunner):
    """ONNX Runtime, counting the sessions of a group alive at each inference and its own activations."""

    def __init__(self, path: Path, name: str, group: list[_CountingRunner], alive: list[int]) -> None:
        super().__init__(lambda: onnx_session(str(path)), name=name)
        self.group, self.alive, self.activations = group, alive, 0
        group.append(self)

    def activate_impl(self) -> None:
        self.activations += 1
        super().activate_impl()

    def infer_impl(self, feed_dict: Any) -> Any:
        self.alive.append(sum(runner.is_active for runner in self.group))
        return super().infer_impl(feed_dict)


@pytest.mark.parametrize("candidates", [1, 3])
def test_one_session_is_alive_whatever_the_number_of_candidates(
    lms: dict[str, Path], candidates: int
) -> None:
    group: list[_CountingRunner] = []
    alive: list[int] = []
    names = ["base", "c0", "c1", "c2"][: 1 + candidates]
    runners = [_CountingRunner(lms[name], name, group, alive) for name in names]
    run_comparison(runners, "base", loader=_loader(), progress=False)
    assert len(alive) == 3 * len(names)  # every runner ran every batch...
    assert max(alive) == 1  # ...with no other session open (the previous design had len(names))
    assert [runner.activations for runner in runners] == [1] * len(names)  # each session created once
    assert not any(runner.is_active for runner in runners)


def test_saved_iterations_hold_every_runner_in_order(lms: dict[str, Path], tmp_path: Path) -> None:
    from polygraphy.comparator import Comparator

    names = ["c1", "base", "c0"]  # the baseline runs first, the file still lists the runners as given
    save = tmp_path / "out"
    save.mkdir()
    run_comparison(
        _runners(lms, names), "base", loader=_loader(), save_dir=save, save_iterations=2, progress=False
    )
    saved = list(load_iterations(save))
    assert len(saved) == 2
    feeds = list(_loader())[:2]
    reference = list(Comparator.run(_runners(lms, names), data_loader=feeds, streaming=True))
    for (feed, results), expected, want in zip(saved, reference, feeds, strict=True):
        np.testing.assert_array_equal(feed["input_ids"], want["input_ids"])
        assert list(results.keys()) == names
        for name in names:
            got = results[name][0]["logits"]
            assert got.dtype == expected[name][0]["logits"].dtype
            np.testing.assert_array_equal(got, expected[name][0]["logits"])
    # The scratch spool next to the output is gone.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_the_spool_is_removed_when_the_comparison_fails(lms: dict[str, Path], tmp_path: Path) -> None:
    import onnx

    model = onnx.load(str(lms["c0"]))
    model.graph.output[0].name = "other"
    model.graph.node[-1].output[0] = "other"
    renamed = tmp_path / "renamed.onnx"
    onnx.save(model, str(renamed))
    save = tmp_path / "out"
    save.mkdir()
    runners = [*_runners(lms, ["base"]), make_runner(parse_runner_spec(f"odd={renamed}"))]
    with pytest.raises(ArtifactError, match="has no output 'logits'"):
        run_comparison(runners, "base", loader=_loader(), save_dir=save, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "renamed.onnx"]


@pytest.mark.parametrize("runtime", [None, 0.25])
def test_streamed_run_results_file_is_polygraphys_own_byte_for_byte(
    tmp_path: Path, runtime: float | None
) -> None:
    from polygraphy.comparator import IterationResult, RunResults

    rng = np.random.default_rng(1)
    runs = {
        "fp16": {
            "logits": rng.normal(size=(2, 3, 5)).astype(np.float16),
            "hidden": np.arange(6.0).reshape(2, 3),
        },
        "int8": {
            "logits": rng.normal(size=(2, 3, 5)).astype(np.float32),
            "hidden": np.zeros((0, 3), np.int64),
        },
    }
    expected = RunResults()
    spooled = []
    with OutputSpool(tmp_path / "x") as spool:
        for name, outputs in runs.items():
            expected.append(
                (name, [IterationResult(outputs=dict(outputs), runtime=runtime, runner_name=name)])
            )
            spool.put_saved(0, name, runtime, outputs)
        spooled = spool._saved[0]
        assert all(isinstance(entry, SpooledResult) for entry in spooled)
        write_run_results(tmp_path / "streamed.json", spooled)
    expected.save(str(tmp_path / "polygraphy.json"))
    assert (tmp_path / "streamed.json").read_bytes() == (tmp_path / "polygraphy.json").read_bytes()
    loaded = RunResults.load(str(tmp_path / "streamed.json"))
    for name, outputs in runs.items():
        for key, value in outputs.items():
            assert loaded[name][0][key].dtype == value.dtype
            np.testing.assert_array_equal(loaded[name][0][key], value)


def test_metrics_of_float16_blocks_equal_those_of_float32_copies() -> None:
    """Converting block by block (no whole float32 copy of a float16 batch) changes no figure."""
    rng = np.random.default_rng(2)
    base = (rng.normal(size=(2, 300, VOCAB)) * 4).astype(np.float16)
    cand = (base.astype(np.float32) + rng.normal(scale=0.3, size=base.shape)).astype(np.float16)
    ids = rng.integers(0, VOCAB, size=(2, 300))
    block, whole = OutputErrorAccumulator(), OutputErrorAccumulator()
    block.update(base, cand)
    whole.update(base.astype(np.float32), cand.astype(np.float32))
    assert block.summary() == whole.summary()
    lm_block, lm_whole = LanguageModelAccumulator(), LanguageModelAccumulator()
    lm_block.update(base, cand, ids)
    lm_whole.update(base.astype(np.float32), cand.astype(np.float32), ids)
    assert lm_block.summary() == lm_whole.summary()
    assert lm_block.summary()["kl_mean"] > 0


def test_generation_accuracy_from_shared_baseline_continuations_is_the_same() -> None:
    """compare generates the baseline's continuations once, closes it, then runs each candidate alone."""
    import copy

    import torch

    from sq_trt.generate.accuracy import baseline_continuations, generation_accuracy
    from sq_trt.generate.runners import TorchStepRunner
    from sq_trt.models.tiny import tiny_model

    model = tiny_model("llama")
    noisy = copy.deepcopy(model)
    with torch.no_grad():
        noisy.lm_head.weight.add_(
            torch.randn(noisy.lm_head.weight.shape, generator=torch.Generator().manual_seed(0))
        )
    prompts = [[5, 9, 200, 17], [40, 41, 42, 43, 44], [250, 3]]
    shared = baseline_continuations(TorchStepRunner(model), prompts, new_tokens=6)
    assert len({tuple(ids) for ids in shared}) == len(prompts)  # distinct: a misaligned reference would show
    direct = generation_accuracy(TorchStepRunner(model), TorchStepRunner(noisy), prompts, new_tokens=6)
    reused = generation_accuracy(None, TorchStepRunner(noisy), prompts, new_tokens=6, continuations=shared)
    assert reused.to_json() == direct.to_json()
    assert direct.metrics()["exact_match_rate"] < 1.0  # the noise changes some continuations
