"""The wheel must ship every subpackage, under the single `sq_trt` namespace; dependency floors are real."""

import importlib.metadata
import inspect
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def test_every_subpackage_is_listed_and_plugins_map_into_sq_trt():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "sq_trt").rglob("__init__.py")
    }
    assert on_disk - listed == set(), "subpackages missing from [tool.setuptools] packages"
    assert config["package-dir"]["sq_trt.plugins"] == "plugins"
    assert all(name == "sq_trt" or name.startswith("sq_trt.") for name in listed)


def _requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [r for group in project["optional-dependencies"].values() for r in group]
    return [Requirement(r) for r in [*project["dependencies"], *extras]]


def _floor(requirement: Requirement) -> Version | None:
    floors = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==")]
    return max(floors) if floors else None


def test_the_tested_environment_satisfies_every_floor():
    # A floor above what CI installs would be untested; each must hold for the installed version.
    checked = 0
    for requirement in _requirements():
        try:
            installed = Version(importlib.metadata.version(requirement.name))
        except importlib.metadata.PackageNotFoundError:
            continue  # an extra not installed here (trt, bench)
        floor = _floor(requirement)
        assert floor is not None, f"{requirement} has no lower bound"
        assert installed >= floor, f"{requirement}: installed {installed} is below the floor"
        checked += 1
    assert checked >= 20


def test_polygraphy_floor_has_the_streaming_comparator_the_compare_stage_calls():
    # compare/run.py calls Comparator.run(..., streaming=True); 0.53.4 is the first release that has it.
    (polygraphy,) = [r for r in _requirements() if r.name == "polygraphy"]
    floor = _floor(polygraphy)
    assert floor is not None and floor >= Version("0.53.4"), polygraphy
    comparator = pytest.importorskip("polygraphy.comparator")
    assert "streaming" in inspect.signature(comparator.Comparator.run).parameters
    assert "streaming=True" in (ROOT / "sq_trt" / "compare" / "run.py").read_text()
