"""Build recipes and optimization profiles: validation that refuses bad input before any build."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sq_trt.engine.profiles import ProfileSpec, RequiredShape, resolve_profiles
from sq_trt.engine.recipe import load_recipe, resolve_settings
from sq_trt.errors import ConfigError

BUILDERS = Path(__file__).resolve().parents[3] / "builders"
BUILD_RECIPES = sorted(
    p for p in BUILDERS.glob("*.yaml") if (yaml.safe_load(p.read_text()) or {}).get("kind") is None
)
INPUTS = {"input_ids": (-1, -1), "position": (1, 8)}


def test_the_shipped_build_recipes_exist():
    names = {p.name for p in BUILD_RECIPES}
    assert {"smollm2-135m.rtx.yaml", "smollm2-135m.trt-h100.yaml"} <= names


@pytest.mark.parametrize("path", BUILD_RECIPES, ids=lambda p: p.name)
def test_each_build_recipe_validates_and_covers_its_required_shapes(path):
    settings = resolve_settings(load_recipe(path), {}, source=str(path))
    assert settings.backend in ("tensorrt", "tensorrt_rtx") and settings.target
    resolve_profiles(settings.profiles, {"input_ids": (-1, -1)}, settings.required_shapes)
    assert settings.required_shapes, "a shipped recipe states the shapes later stages need"


def test_profile_resolves_batch_and_sequence_axes_and_keeps_static_inputs():
    (profile,) = resolve_profiles([ProfileSpec(batch=(1, 2, 8), seq=(1, 64, 256))], INPUTS)
    assert profile.shapes == {"input_ids": ((1, 1), (2, 64), (8, 256))}  # static "position" needs no profile


def test_explicit_shapes_override_and_must_fit_the_network():
    spec = ProfileSpec(shapes={"input_ids": {"min": [1, 4], "opt": [1, 8], "max": [2, 16]}})
    (profile,) = resolve_profiles([spec], INPUTS)
    assert profile.shapes["input_ids"] == ((1, 4), (1, 8), (2, 16))
    with pytest.raises(ConfigError, match="not network inputs"):
        resolve_profiles([ProfileSpec(shapes={"ids": {"min": [1], "opt": [1], "max": [1]}})], INPUTS)
    with pytest.raises(ConfigError, match="keep the rank"):
        resolve_profiles([ProfileSpec(shapes={"input_ids": {"min": [1], "opt": [1], "max": [2]}})], INPUTS)


def test_a_third_dynamic_axis_needs_explicit_shapes():
    with pytest.raises(ConfigError, match="dynamic axis 2"):
        resolve_profiles([ProfileSpec()], {"pixel": (-1, 3, -1)})


@pytest.mark.parametrize(
    "bad",
    [{"batch": [2, 1, 4]}, {"seq": [1, 600, 512]}, {"batch": [0, 1, 1]}, {"seq": [1, 2]}],
)
def test_unordered_or_non_positive_ranges_are_refused(bad):
    with pytest.raises(ConfigError, match="profiles"):
        resolve_settings({"profiles": [bad]}, {}, source="test")


def test_required_shapes_must_fall_inside_some_profile():
    specs = [ProfileSpec(name="a", batch=(1, 1, 2), seq=(1, 64, 128)), ProfileSpec(name="b", batch=(4, 8, 8))]
    resolve_profiles(specs, INPUTS, [RequiredShape(batch=2, seq=128), RequiredShape(batch=8, seq=512)])
    with pytest.raises(ConfigError, match="batch=3, seq=512 lies outside every profile"):
        resolve_profiles(specs, INPUTS, [RequiredShape(batch=3, seq=512)])


def test_duplicate_profile_names_are_refused():
    with pytest.raises(ConfigError, match="unique"):
        resolve_profiles([ProfileSpec(), ProfileSpec()], INPUTS)


def test_flags_override_recipe_and_unknown_keys_are_named():
    settings = resolve_settings(
        {"opt_level": 2, "target": "rtx"}, {"opt_level": 5, "target": None}, source="r"
    )
    assert settings.opt_level == 5 and settings.target == "rtx"
    with pytest.raises(ConfigError, match="opt_levle"):
        resolve_settings({"opt_levle": 2}, {}, source="r")
    with pytest.raises(ConfigError, match="opt_level"):
        resolve_settings({"opt_level": 9}, {}, source="r")
    with pytest.raises(ConfigError, match="plain file name"):
        resolve_settings({"name": "../escape"}, {}, source="r")


def test_recipe_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_recipe(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("backend: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_recipe(tmp_path / "list.yaml")
    (tmp_path / "pipe.yaml").write_text("kind: pipeline\nname: x\n")
    with pytest.raises(ConfigError, match="sq-trt pipeline"):
        load_recipe(tmp_path / "pipe.yaml")
