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

Manual use: ``python -m tests.trt_api.harness [--version V ...] [--check]`` prepares
the environments, prints their paths, and with ``--check`` runs the mypy conformance
check (:mod:`tests.trt_api.conformance`). See ``docs/TRT_API_CHECK.md``.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import fcntl
import functools
import hashlib
import importlib.metadata
import json
import keyword
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

# TensorRT 11 (current), the newest 10.x, and the oldest the project supports (10.12, MIN_TENSORRT).
TRT_VERSIONS: tuple[str, ...] = ("11.4.0.106", "10.16.1.11", "10.12.0.36")
WHEEL_PACKAGE = "tensorrt-cu12-bindings"
# NVIDIA's libraries are named libnv*; anything else NEEDED must come from the system.
NVIDIA_LIB_PREFIX = "libnv"
_FORMAT = 1  # bump when the cached layout changes


class HarnessUnavailable(RuntimeError):
    """The harness cannot be prepared here (no network, no compiler, ...); tests skip with this reason."""


class HarnessError(RuntimeError):
    """A wheel or generated stub is not what the harness expects: a failure, never a skip."""


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


def _run(cmd: Sequence[str], **kwargs: object) -> str:
    proc = subprocess.run(list(cmd), check=False, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise HarnessUnavailable(
            f"`{' '.join(cmd)}` exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-800:]}"
        )
    return str(proc.stdout)


def _cache_key(*parts: str) -> str:
    source = Path(__file__).read_bytes()
    try:
        stubgen = importlib.metadata.version("pybind11-stubgen")
    except importlib.metadata.PackageNotFoundError as exc:
        raise HarnessUnavailable(
            "pybind11-stubgen is not installed (the `dev` extra): pip install pybind11-stubgen"
        ) from exc
    blob = "|".join([str(_FORMAT), sys.version, stubgen, hashlib.sha256(source).hexdigest(), *parts])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def needed_libraries(ext: Path) -> list[str]:
    """The SONAMEs an ELF file lists as NEEDED (``readelf -d``)."""
    out = _run(["readelf", "-d", str(ext)])
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def undefined_symbols(ext: Path) -> set[str]:
    """Strong undefined dynamic symbols of an ELF file, version suffixes dropped (weak ones may stay unset)."""
    out = _run(["nm", "-D", "--undefined-only", str(ext)])
    return {line.split()[-1].split("@")[0] for line in out.splitlines() if line.split()[-2:-1] == ["U"]}


def defined_symbols(lib: Path) -> set[str]:
    """Defined dynamic symbols of a shared library, version suffixes dropped."""
    out = _run(["nm", "-D", "--defined-only", str(lib)])
    return {line.split()[-1].split("@")[0] for line in out.splitlines() if line.strip()}


@functools.cache
def _loader_cache() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for line in _run(["ldconfig", "-p"]).splitlines()[1:]:
        name, _, target = line.strip().partition(" => ")
        soname, _, flags = name.partition(" (")
        # On a multilib system keep the 64-bit entry: the bindings are x86-64 ELF.
        if soname not in found or "64" in flags:
            found[soname] = Path(target)
    return found


def system_library(soname: str) -> Path | None:
    """Where the dynamic loader's cache finds ``soname``, or None."""
    return _loader_cache().get(soname)


def python_library() -> Path:
    """The ELF file that provides the C API to extension modules: libpython, or the interpreter itself."""
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        lib = Path(str(sysconfig.get_config_var("LIBDIR"))) / str(sysconfig.get_config_var("INSTSONAME"))
        if lib.exists():
            return lib
    return Path(sys.executable).resolve()


def symbols_to_stub(ext: Path) -> tuple[list[str], list[str]]:
    """Derive which NVIDIA libraries to stub and which symbols they must define.

    Args:
        ext: The bindings' extension module (``tensorrt.so``).

    Returns:
        ``(nvidia_sonames, symbols)``: the NEEDED NVIDIA libraries, and the undefined symbols that no
        system NEEDED library and not libpython define.

    Raises:
        HarnessUnavailable: A NEEDED library that is not NVIDIA's is missing from this system.
        HarnessError: The extension imports nothing from NVIDIA's libraries (not a TensorRT binding).
    """
    nvidia, provided = [], defined_symbols(python_library())
    for soname in needed_libraries(ext):
        if soname.startswith(NVIDIA_LIB_PREFIX):
            nvidia.append(soname)
            continue
        path = system_library(soname)
        if path is None:
            raise HarnessUnavailable(f"{ext.name} needs {soname}, which this system's loader cannot find")
        provided |= defined_symbols(path)
    missing = sorted(undefined_symbols(ext) - provided)
    if not nvidia or not missing:
        raise HarnessError(f"{ext} links no NVIDIA library symbols (NEEDED nvidia={nvidia}); unexpected")
    return nvidia, missing


def compile_stubs(sonames: Sequence[str], symbols: Sequence[str], out: Path) -> None:
    """Compile one stub library per SONAME, each defining every symbol as a function returning null.

    The extension alone does not say which NVIDIA library defines which symbol; the loader takes the
    first definition it finds, so every stub defining all of them is equivalent and needs no hand-kept map.
    """
    bad = [s for s in symbols if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", s)]
    assert not bad, f"symbols that are not C identifiers: {bad}"
    source = out / "trt_stub.c"
    lines = ["/* Generated by tests/trt_api/harness.py: TensorRT entry points that return null. */"]
    lines += [f"void *{s}(void) {{ return 0; }}" for s in symbols]
    source.write_text("\n".join(lines) + "\n")
    compiler = os.environ.get("CC", "cc")
    if shutil.which(compiler) is None:
        raise HarnessUnavailable(f"no C compiler `{compiler}` on PATH to build the TensorRT stub libraries")
    for soname in sonames:
        _run([compiler, "-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", str(out / soname), str(source)])


_SHIM = '''"""Shim for NVIDIA's `tensorrt` metapackage: re-export the bindings (written by the test harness)."""
import sys
from tensorrt_bindings import *  # noqa: F403
from tensorrt_bindings import __version__
import tensorrt_bindings.plugin as plugin

sys.modules[__name__ + ".plugin"] = plugin
'''

_SHIM_PYI = "from tensorrt_bindings import *\nfrom tensorrt_bindings import __version__ as __version__\n"
_SHIM_PLUGIN_PYI = "from tensorrt_bindings.plugin import *\n"


def generate_pyi(modules: Sequence[str], out: Path, env: dict[str, str]) -> None:
    """Write ``.pyi`` stubs of the importable ``modules`` into ``out`` with pybind11-stubgen."""
    _run(
        [sys.executable, "-m", "pybind11_stubgen", "-o", str(out), *modules],
        env=env,
        timeout=300,
    )
    for pyi in out.rglob("*.pyi"):
        sanitize_pyi(pyi)
        if "plugin" in pyi.relative_to(out).parts:
            pyi.write_text(widen_single_tuples(pyi.read_text()))
    extension = modules[0].split(".")[0]
    buffers = _run([sys.executable, "-c", _BUFFER_PROBE, extension], env=env).split()
    for pyi in out.rglob("*.pyi"):
        add_buffer_protocol(pyi, buffers)


# Classes whose C type fills tp_as_buffer support bytes(x)/memoryview(x) (e.g. IHostMemory). Python 3.11
# shows no attribute for that, and pybind11-stubgen writes none, so read the slot (its offset in
# PyTypeObject has been 160 bytes on 64-bit CPython since 3.8).
_BUFFER_PROBE = """
import ctypes, importlib, sys
mod = importlib.import_module(sys.argv[1])
for sub in [mod] + [v for v in vars(mod).values() if type(v).__name__ == "module"]:
    for name, obj in vars(sub).items():
        if isinstance(obj, type) and ctypes.c_void_p.from_address(id(obj) + 160).value:
            print(f"{obj.__module__}.{obj.__qualname__}")
"""


def add_buffer_protocol(path: Path, classes: Sequence[str]) -> None:
    """Declare ``__buffer__`` on the stub classes (``module.Class``) that support the buffer protocol."""
    lines = path.read_text().splitlines()
    names = {c.rsplit(".", 1)[1] for c in classes if c.rsplit(".", 1)[0] == _stub_module(path)}
    out = []
    for line in lines:
        out.append(line)
        match = re.match(r"class (\w+)\b.*:$", line)
        if match and match[1] in names:
            out.append("    def __buffer__(self, flags: int, /) -> memoryview: ...")
    path.write_text("\n".join(out) + "\n")


def _stub_module(path: Path) -> str:
    parts = list(path.with_suffix("").parts)
    start = max(i for i, p in enumerate(parts) if p == "pyi") + 1
    parts = parts[start:]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _split_params(params: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(params):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            parts.append(params[start:i].strip())
            start = i + 1
    return parts + [params[start:].strip()] if params.strip() else parts


def _fix_signature(line: str) -> str:
    """Make one generated ``def`` line valid Python, keeping its parameters' names, order and types."""
    indent = line[: len(line) - len(line.lstrip())]
    head, _, rest = line.strip().partition("(")
    params_text, _, tail = rest.rpartition(")")
    fixed, seen_default = [], False
    for param in _split_params(params_text):
        name, sep, annotation = param.partition(":")
        # C++ parameter names that are Python keywords (`in`) can only be passed by position anyway.
        if keyword.iskeyword(name.strip()):
            param = f"{name.strip()}_{sep}{annotation}"
        # pybind11 allows a required argument after defaulted ones (by keyword); a stub cannot say so.
        if "=" in param:
            seen_default = True
        elif seen_default and not param.startswith("*"):
            param += " = ..."
        fixed.append(param)
    return f"{indent}{head}({', '.join(fixed)}){tail}"


def _widen(text: str, wrap: str) -> str:
    out, i = [], 0
    while (j := text.find("tuple[", i)) >= 0:
        k, depth, comma = j + len("tuple["), 1, False
        while depth:
            depth += text[k] in "[("
            depth -= text[k] in "])"
            comma |= depth == 1 and text[k] == ","
            k += 1
        inner = _widen(text[j + len("tuple[") : k - 1], wrap)
        out.append(text[i:j])
        out.append(f"tuple[{inner}]" if comma or inner == "()" else wrap.format(inner))
        i = k
    return "".join(out) + text[i:]


def widen_single_tuples(text: str) -> str:
    """Read ``tensorrt.plugin``'s ``Tuple[X]`` as NVIDIA means it: any number of X.

    ``tensorrt.plugin`` is annotated by hand with ``Tuple[X]`` meaning "a tuple of X" (``from_tuple``,
    ``from_shape_expr``, ``Shape.max``), which a type checker reads as "exactly one X". As a parameter
    it is only iterated, and NVIDIA's own sample passes a list
    (``samples/python/quickly_deployable_plugins/qdp_defs.py``: ``SymIntExprs.from_tuple([...])``), so
    parameters become ``typing.Sequence[X]``; results become ``tuple[X, ...]``.
    """
    lines = []
    for line in text.splitlines():
        params, arrow, result = (
            line.rpartition(") ->") if line.lstrip().startswith("def ") else ("", "", line)
        )
        lines.append(_widen(params, "typing.Sequence[{}]") + arrow + _widen(result, "tuple[{}, ...]"))
    head, _, rest = "\n".join(lines).partition("\n")
    return f"{head}\nimport typing\n{rest}\n"


def sanitize_pyi(path: Path) -> None:
    """Repair the few signatures pybind11-stubgen writes that are not valid Python.

    Raises:
        HarnessError: The stub still does not parse (a new kind of breakage to handle here).
    """
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.lstrip().startswith("def "):
            try:
                ast.parse(line.strip() + "\n    ...")
            except SyntaxError:
                lines[i] = _fix_signature(line)
    text = "\n".join(lines) + "\n"
    try:
        ast.parse(text)
    except SyntaxError as exc:
        raise HarnessError(
            f"generated stub {path} is not valid Python at line {exc.lineno}: {exc.msg}"
        ) from exc
    path.write_text(text)


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
            _run(
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

            findings, checked = conformance_errors(env, cache_root() / "mypy-work")
            print(f"  checked {len(checked)} files: " + ("OK" if not findings else "FAILED"))
            if findings:
                failed = True
                print("  " + format_failure(env.label, findings).replace("\n", "\n  "))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
