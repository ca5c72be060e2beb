"""The wheel must ship every subpackage, under the single `sq_trt` namespace."""

import tomllib
from pathlib import Path

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
