"""Keep the container's own TensorRT through `pip install` (run by docker/Dockerfile at image build time).

``write FILE``: pin every installed ``tensorrt*`` distribution to its version in a
pip constraints file, and record ``tensorrt.__version__``. Fails when TensorRT is
not importable or pip knows no ``tensorrt*`` distribution: an empty pin file would
let pip pull another TensorRT from PyPI for the ``trt`` extra.

``check FILE``: after the install, fail unless ``tensorrt.__version__`` and every
pinned distribution are still what ``write`` recorded.

Standard library only: it runs before sq-trt is installed.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import sys
from pathlib import Path

_MODULE_LINE = "# tensorrt.__version__ == "


def _module_version() -> str:
    try:
        module = importlib.import_module("tensorrt")
    except ImportError as exc:
        raise SystemExit(
            f"tensorrt_pins: error: TensorRT's Python module is not importable ({exc}); build FROM "
            "nvcr.io/nvidia/tensorrt:<release>-py3, whose TensorRT the engines must be built with"
        ) from exc
    return str(getattr(module, "__version__", ""))


def installed_pins() -> list[str]:
    """``name==version`` for every installed distribution whose name starts with ``tensorrt``."""
    pins = set()
    for dist in importlib.metadata.distributions():
        name = str(dist.metadata["Name"] or "")
        if re.sub(r"[-_.]+", "-", name).lower().startswith("tensorrt"):
            pins.add(f"{name}=={dist.version}")
    return sorted(pins)


def write(path: Path) -> None:
    """Write the constraints file (see the module docstring)."""
    version = _module_version()
    pins = installed_pins()
    if not pins:
        raise SystemExit(
            f"tensorrt_pins: error: TensorRT {version} imports but pip knows no tensorrt* distribution, so it "
            "cannot be pinned and `pip install .[trt]` could replace it with another TensorRT from PyPI; "
            "use an NVIDIA TensorRT container whose Python bindings are pip-installed"
        )
    path.write_text(_MODULE_LINE + version + "\n" + "\n".join(pins) + "\n")
    print(f"tensorrt_pins: keeping TensorRT {version}: {', '.join(pins)}")


def check(path: Path) -> None:
    """Fail unless the installed TensorRT is still the one :func:`write` recorded."""
    lines = path.read_text().splitlines()
    recorded = next((line[len(_MODULE_LINE) :] for line in lines if line.startswith(_MODULE_LINE)), None)
    version = _module_version()
    problems = [] if recorded == version else [f"tensorrt.__version__ is {version}, was {recorded}"]
    now = set(installed_pins())
    problems += [
        f"{pin} is no longer installed"
        for pin in lines
        if "==" in pin and not pin.startswith("#") and pin not in now
    ]
    if problems:
        raise SystemExit(
            "tensorrt_pins: error: installing sq-trt changed the container's TensorRT ("
            + "; ".join(problems)
            + ")"
        )
    print(f"tensorrt_pins: TensorRT {version} is the container's")


def main(argv: list[str]) -> int:
    """``tensorrt_pins.py write|check FILE``."""
    if len(argv) != 2 or argv[0] not in ("write", "check"):
        print("usage: tensorrt_pins.py write|check CONSTRAINTS_FILE", file=sys.stderr)
        return 2
    (write if argv[0] == "write" else check)(Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
