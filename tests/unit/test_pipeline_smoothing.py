"""Candidates carrying their own smoothing: one smooth stage per distinct config, each export on its own weights.

A tiny random Llama through `sq-trt pipeline` (no engines: `build.backend=none`): the recipe's
shared smoothing (alpha searched under per-token quantization) serves two candidates, a third
carries its own (pairs, alphas searched under per-tensor quantization). The module's tests share
one work directory and each changes one thing, checking exactly which stages rerun.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sq_trt.cli import main
from sq_trt.errors import ConfigError
from sq_trt.pipeline.recipe import Candidate, load_recipe, smoothing_key, validate_recipe
from sq_trt.pipeline.runner import artifact_fingerprint
from sq_trt.pipeline.stages import run_pipeline, smooth_stage_name
from sq_trt.smooth import search as autoalpha
from sq_trt.smooth.config import SmoothConfig

RECIPE = Path(__file__).resolve().parents[2] / "builders" / "smollm2-135m.yaml"
PER_TENSOR_SMOOTHING = "{alpha: auto, include_optional: true, search: {act_mode: per_tensor, grid: [0.3, 0.6, 0.9]}}"
TINY = [
    "model.source=tiny:llama",
    "calibrate.samples=2",
    "calibrate.seq_len=32",
    "compare.samples=2",
    "compare.seq_len=32",
    "build.backend=none",
    "smooth={alpha: auto, search: {grid: [0.3, 0.6, 0.9]}}",
    (
        "export.candidates=[{name: naive, smooth: false}, {name: sq-a}, {name: sq-b, encoding: portable}, "
        f"{{name: sq-tensor, act_mode: per_tensor, smoothing: {PER_TENSOR_SMOOTHING}}}]"
    ),
    "gate=['sq-a:ppl_increase_pct<=100']",
]


def _manifest(path: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((path / "manifest.json").read_text())
    return manifest


class SmoothingRun:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.work = root / "work"
        self.overrides = [*TINY, f"work_dir={self.work}", f"engines_dir={root / 'engines'}"]
        self.captures = 0

    def recipe(self, *extra: str) -> Any:
        return load_recipe(RECIPE, [*self.overrides, *extra])

    def run(self, *extra: str) -> dict[str, str]:
        result = run_pipeline(self.recipe(*extra), progress=False, log=lambda _: None)
        return {r.name: r.status for r in result.reports}


@pytest.fixture(scope="module")
def smoothing_run(module_tmp: Callable[[str], Path]) -> SmoothingRun:
    run = SmoothingRun(module_tmp("pipeline-smoothing"))
    real = autoalpha.collect_group_inputs

    def counting(*args: Any, **kwargs: Any) -> Any:
        run.captures += 1
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        # Counts the real capture (nothing is replaced): both searches must share one.
        patch.setattr(autoalpha, "collect_group_inputs", counting)
        run.first = run.run()
    return run


def _own_stage(run: SmoothingRun, *extra: str) -> str:
    recipe = run.recipe(*extra)
    own = next(c for c in recipe.export.candidates if c.name == "sq-tensor")
    assert own.smoothing is not None
    return smooth_stage_name(recipe, own.smoothing)


def test_two_distinct_smoothings_run_two_smooth_stages_and_share_one_capture(smoothing_run: SmoothingRun) -> None:
    own = _own_stage(smoothing_run)
    assert own.startswith("smooth-") and len(own) == len("smooth-") + 8
    smooth_stages = sorted(name for name in smoothing_run.first if name.startswith("smooth"))
    assert smooth_stages == sorted(["smooth", own])  # sq-a and sq-b share the recipe's smoothing
    assert all(smoothing_run.first[name] == "ran" for name in smooth_stages)
    assert smoothing_run.captures == 1
    shared = _manifest(smoothing_run.work / "smooth")
    separate = _manifest(smoothing_run.work / own)
    assert shared["config"]["search"]["act_mode"] == "per_token" and shared["config"]["include_optional"] is False
    assert separate["config"]["search"]["act_mode"] == "per_tensor" and separate["config"]["include_optional"] is True
    # The pairs are smoothed only in the candidate's own artifact.
    assert not any(name.endswith(("v_o", "up_down")) for name in shared["extra"]["alphas"])
    assert any(name.endswith("up_down") for name in separate["extra"]["alphas"])
    assert set(separate["extra"]["alphas"].values()) <= {0.3, 0.6, 0.9}


def test_each_export_uses_the_weights_of_its_own_smoothing(smoothing_run: SmoothingRun) -> None:
    work = smoothing_run.work
    own = _own_stage(smoothing_run)
    shared_weights = _manifest(work / "smooth")["extra"]["model_fingerprint"]
    own_weights = _manifest(work / own)["extra"]["model_fingerprint"]
    assert shared_weights != own_weights
    expected = (("sq-a", shared_weights, "smooth"), ("sq-b", shared_weights, "smooth"), ("sq-tensor", own_weights, own))
    for name, weights, stage in expected:
        export = _manifest(work / "export" / name)
        assert export["extra"]["model_fingerprint"] == weights, name
        assert export["inputs"]["smoothed"] == artifact_fingerprint(work / stage), name
    naive = _manifest(work / "export" / "naive")
    assert naive["extra"]["model_fingerprint"] not in (shared_weights, own_weights)


def test_changing_one_candidates_smoothing_reruns_only_its_stages(smoothing_run: SmoothingRun) -> None:
    old = _own_stage(smoothing_run)
    change = "export.candidates.3.smoothing.search.grid=[0.5, 1.0]"
    new = _own_stage(smoothing_run, change)
    assert new != old
    statuses = smoothing_run.run(change)
    assert statuses[new] == "ran" and old not in statuses
    for name in ("calibrate", "smooth", "export/naive", "export/sq-a", "export/sq-b"):
        assert statuses[name] == "reused", (name, statuses)
    for name in ("export/sq-tensor", "compare", "report"):
        assert statuses[name] == "ran", (name, statuses)
    assert set(_manifest(smoothing_run.work / new)["extra"]["alphas"].values()) <= {0.5, 1.0}
    # Back to the recipe's smoothing: its artifact is still there and reused.
    statuses = smoothing_run.run()
    assert statuses[old] == "reused" and statuses["smooth"] == "reused"
    assert statuses["export/sq-tensor"] == "ran"


def test_changing_the_shared_smoothing_keeps_a_candidates_own(smoothing_run: SmoothingRun) -> None:
    own = _own_stage(smoothing_run)
    statuses = smoothing_run.run("smooth.alpha=0.6")
    assert statuses["smooth"] == "ran" and statuses[own] == "reused"
    assert statuses["export/sq-tensor"] == "reused" and statuses["export/naive"] == "reused"
    assert statuses["export/sq-a"] == statuses["export/sq-b"] == "ran"


def test_a_candidate_spelling_the_shared_smoothing_shares_its_stage() -> None:
    recipe = validate_recipe(
        {
            "kind": "pipeline",
            "name": "t",
            "model": {"source": "tiny:llama"},
            "smooth": {"alpha": 0.7, "include_optional": True},
            "export": {
                "candidates": [
                    {"name": "a"},
                    {"name": "b", "smoothing": {"include_optional": True, "alpha": 0.7, "search": {}}},
                    {"name": "c", "smoothing": {"alpha": 0.7}},
                ]
            },
            "gate": [],
        }
    )
    _, b, c = recipe.export.candidates
    assert b.smoothing is not None and c.smoothing is not None
    assert smooth_stage_name(recipe, b.smoothing) == "smooth"
    assert smooth_stage_name(recipe, c.smoothing) != "smooth"
    assert len(recipe.smoothings()) == 2
    assert smoothing_key(SmoothConfig(alpha=0.7)) == smoothing_key(c.smoothing)


# ----------------------------------------------------------------------------- recipe validation


def test_the_candidate_smoothing_is_the_smooth_stage_config_itself() -> None:
    annotation = Candidate.model_fields["smoothing"].annotation
    assert SmoothConfig in getattr(annotation, "__args__", ())


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("export.candidates.1.smoothing.alpha=2", "export.candidates.1.smoothing.alpha: alpha must be a number in [0, 1]"),
        ("export.candidates.1.smoothing.alhpa=0.5", "export.candidates.1.smoothing.alhpa: unknown field; did you mean `alpha`?"),
        ("export.candidates.1.smoothing.search.act_mode=per_row", "export.candidates.1.smoothing.search.act_mode"),
        ("export.candidates.1.smoothing.search.grid=[]", "the alpha search grid is empty"),
        ("export.candidates.0.smoothing.alpha=0.5", "candidate 'naive-per-token' has smooth: false and its own smoothing"),
    ],
)
def test_a_bad_candidate_smoothing_is_refused_when_the_recipe_loads(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_recipe(RECIPE, [override])
    assert expected in str(info.value)


def test_set_reaches_every_field_of_a_candidates_smoothing() -> None:
    recipe = load_recipe(
        RECIPE,
        [
            "export.candidates.2.smoothing.alpha=0.65",
            "export.candidates.2.smoothing.min_scale=0.001",
            "export.candidates.2.smoothing.overrides={'layers.*.mlp_in': auto}",
            "export.candidates.2.smoothing.search.act_mode=per-tensor",
            "export.candidates.2.smoothing.search.samples=2",
        ],
    )
    own = recipe.export.candidates[2].smoothing
    assert own is not None
    assert (own.alpha, own.min_scale, own.overrides) == (0.65, 0.001, (("layers.*.mlp_in", "auto"),))
    assert (own.search.act_mode, own.search.samples) == ("per_tensor", 2)
    plugin = next(c for c in recipe.export.candidates if c.name == "sq-per-token-plugin")
    assert plugin.smoothing is None  # the others keep the shared one


def test_offload_refuses_a_candidates_searched_smoothing() -> None:
    with pytest.raises(ConfigError, match="candidate 'b' searches its alphas"):
        validate_recipe(
            {
                "kind": "pipeline",
                "name": "t",
                "model": {"source": "some/dir", "offload": True},
                "smooth": {"alpha": 0.5},
                "export": {"candidates": [{"name": "a"}, {"name": "b", "smoothing": {"alpha": "auto"}}]},
                "gate": [],
            }
        )


def test_a_candidate_override_matching_no_group_fails_before_calibrate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    argv = ["pipeline", "--recipe", str(RECIPE), "--quiet"]
    for override in [
        *TINY,
        f"work_dir={work}",
        f"engines_dir={tmp_path / 'engines'}",
        "export.candidates.3.smoothing.overrides={'layers.*.mpl_in': 0.5}",
    ]:
        argv += ["--set", override]
    assert main(argv) == 1
    assert "'layers.*.mpl_in' matches no smoothing group" in capsys.readouterr().err
    assert not (work / "calibrate" / "manifest.json").exists()


def test_an_offloaded_model_runs_each_candidates_numeric_smoothing(tmp_path: Path) -> None:
    from sq_trt.models.tiny import byte_tokenizer, tiny_model

    checkpoint = tmp_path / "ckpt"
    tiny_model("llama").save_pretrained(checkpoint)
    byte_tokenizer().save_pretrained(checkpoint)
    work = tmp_path / "work"
    recipe = load_recipe(
        RECIPE,
        [
            *TINY[1:],
            f"model.source={checkpoint}",
            "model.offload=true",
            "compare.samples=1",
            "smooth={alpha: 0.5}",
            "export.candidates=[{name: a}, {name: b, act_mode: per_tensor, smoothing: {alpha: 0.8}}]",
            "gate=[]",
            f"work_dir={work}",
            f"engines_dir={tmp_path / 'engines'}",
        ],
    )
    own = smooth_stage_name(recipe, SmoothConfig(alpha=0.8))
    statuses = {r.name: r.status for r in run_pipeline(recipe, progress=False, log=lambda _: None).reports}
    assert statuses["smooth"] == statuses[own] == "ran"
    assert set(_manifest(work / "smooth")["extra"]["alphas"].values()) == {0.5}
    assert set(_manifest(work / own)["extra"]["alphas"].values()) == {0.8}
    assert (work / ".offload" / own).is_dir()  # its own offload folder: the shared smoothing's stays intact
    for name, stage in (("a", "smooth"), ("b", own)):
        weights = _manifest(work / stage)["extra"]["model_fingerprint"]
        assert _manifest(work / "export" / name)["extra"]["model_fingerprint"] == weights
