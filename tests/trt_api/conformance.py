"""Run mypy over the project's TensorRT code against one TensorRT version's real API.

Two mypy runs per check: one with TensorRT unknown (everything ``Any``, the
baseline) and one with the version's stubs on ``MYPYPATH`` and
:mod:`tests.trt_api.mypy_plugin` typing the module the code passes around. An
error only the second run reports is a use of TensorRT's API that this version
does not have (a missing attribute, enum member, method or argument, or a wrong
argument type); errors of the project's own typing are in both and are left to
the project's own mypy job.

Backend-specific code is checked only against its backend: the named conditions
in :data:`BACKEND_CONDITIONS` (``backend.is_rtx``, ``supports_plugins``, ...)
are fixed per run with mypy's ``always_true`` / ``always_false``, so the
TensorRT run skips RTX-only branches and the other way round.
"""

from __future__ import annotations

import ast
import functools
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .harness import BindingsEnv

REPO = Path(__file__).resolve().parents[2]
PLUGIN = Path(__file__).with_name("mypy_plugin.py")
# (name in the project, whether it holds for TensorRT proper); the RTX run flips each.
BACKEND_CONDITIONS: tuple[tuple[str, bool], ...] = (
    ("is_rtx", False),
    ("supports_timing_cache", True),
    ("supports_plugins", True),
    ("needs_gpu_to_build", True),
)
# Heavy libraries the TensorRT code never hands to TensorRT: skipped (Any) to keep mypy fast.
SKIPPED_IMPORTS = (
    "torch",
    "transformers",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "onnx_graphsurgeon",
    "polygraphy",
    "triton",
    "safetensors",
    "datasets",
    "gguf",
    "accelerate",
    "matplotlib",
    "tritonclient",
    "google",
    "yaml",
    "tqdm",
    "pydantic",
)
_LINE = re.compile(
    r"^(?P<path>[^:\n]+):(?P<line>\d+):(?:(?P<col>\d+):)? error: (?P<msg>.*?)(?:  \[(?P<code>[a-z-]+)\])?$"
)


@dataclass(frozen=True)
class Finding:
    """One mypy error, with its location mapped back to the repository."""

    path: str
    line: int
    message: str
    code: str

    def key(self) -> tuple[str, int, str]:
        """Identity across runs (columns and codes can differ when a type turns from Any to known)."""
        return (self.path, self.line, self.message)

    def describe(self, label: str) -> str:
        """``"TensorRT 11.4.0.106: sq_trt/engine/x.py:12: Module "tensorrt" has no attribute "Y""``."""
        return f"{label}: {self.path}:{self.line}: {self.message} [{self.code}]"


def tensorrt_files(repo: Path = REPO) -> list[Path]:
    """The project's modules that use TensorRT: ``sq_trt/engine``, ``plugins`` and any other that names it."""
    found: set[Path] = set()
    for folder in (repo / "sq_trt", repo / "plugins"):
        for path in folder.rglob("*.py"):
            text = path.read_text(encoding="utf-8", errors="replace")
            in_scope = path.is_relative_to(repo / "sq_trt" / "engine") or path.is_relative_to(repo / "plugins")
            if in_scope or re.search(r"\btensorrt\b|\btrt\.\w", text):
                found.add(path)
    return sorted(found)


def mirror_sources(
    dest: Path, repo: Path = REPO, edits: dict[str, list[tuple[str, str]]] | None = None
) -> Path:
    """Copy the package as it is imported (``plugins/`` becomes ``sq_trt/plugins``) into ``dest``.

    Files whose bytes did not change are left alone, so mypy's incremental cache stays valid.

    Args:
        dest: Stable directory (mypy caches by path).
        repo: Repository root.
        edits: ``{repo-relative path: [(old, new), ...]}`` text replacements, for the self-test.

    Returns:
        The mirror's ``sq_trt`` directory.
    """
    edits = edits or {}
    wanted: dict[Path, bytes] = {}
    for folder, target in (
        (repo / "sq_trt", dest / "sq_trt"),
        (repo / "plugins", dest / "sq_trt" / "plugins"),
    ):
        for path in folder.rglob("*.py"):
            data = path.read_bytes()
            rel = str(path.relative_to(repo))
            for old, new in edits.get(rel, []):
                assert old.encode() in data, f"{old!r} not in {rel}"
                data = data.replace(old.encode(), new.encode())
            wanted[target / path.relative_to(folder)] = data
    for existing in dest.rglob("*.py") if dest.exists() else ():
        if existing not in wanted and not existing.name.startswith("trt_api_probe"):
            existing.unlink()
    for path, data in wanted.items():
        if not path.exists() or path.read_bytes() != data:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    return dest / "sq_trt"


MODULE_ALIASES = ("trt", "trtp")
_TRT_MODULES = ("tensorrt", "tensorrt_rtx_bindings")


def _is_module_annotation(node: ast.expr | None) -> bool:
    return node is not None and "ModuleType" in ast.unparse(node)


def _is_trt_source(node: ast.expr) -> bool:
    """``backend.trt``, ``require("tensorrt...", ...)``, ``importlib.import_module("tensorrt...")``."""
    if isinstance(node, ast.Attribute) and node.attr in MODULE_ALIASES:
        return True
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
        name = ast.unparse(node.func).rsplit(".", 1)[-1]
        return name in ("require", "import_module") and str(node.args[0].value).startswith(_TRT_MODULES)
    return False


def unresolved_module_names(path: Path) -> list[str]:
    """TensorRT module values the mypy plugin would not resolve, so whose use would go unchecked.

    The plugin resolves ``ModuleType`` values named ``trt`` / ``trtp``. A module value under another
    name whose attributes the code reads (``rt.Builder``), or a ``trt`` parameter annotated ``Any``
    (mypy never looks inside ``Any``), would silently escape the check.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    holders: dict[str, int] = {}
    problems = []
    for node in ast.walk(tree):
        # `trt: Any` (or no annotation) is never looked at by mypy, so nothing read from it is checked.
        if (
            isinstance(node, ast.arg)
            and node.arg in MODULE_ALIASES
            and not _is_module_annotation(node.annotation)
        ):
            where = path.relative_to(REPO) if path.is_relative_to(REPO) else path.name
            shown = ast.unparse(node.annotation) if node.annotation is not None else "(unannotated)"
            problems.append(
                f"{where}:{node.lineno}: parameter `{node.arg}: {shown}` "
                "hides the TensorRT module from the check; annotate it `types.ModuleType`"
            )
        if isinstance(node, ast.arg) and _is_module_annotation(node.annotation):
            holders.setdefault(node.arg, node.lineno)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if _is_module_annotation(node.annotation) or (
                node.value is not None and _is_trt_source(node.value)
            ):
                holders.setdefault(node.target.id, node.lineno)
        elif isinstance(node, ast.Assign) and _is_trt_source(node.value):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    holders.setdefault(target.id, node.lineno)
    read = {
        (node.value.id if isinstance(node.value, ast.Name) else node.value.attr)
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, (ast.Name, ast.Attribute))
        and not node.attr.startswith("__")
    }
    problems += [
        f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path.name}:{line}: `{name}` holds a TensorRT module; name it `trt` (or `trtp`) so it is checked"
        for name, line in sorted(holders.items(), key=lambda item: item[1])
        if name not in MODULE_ALIASES and name in read
    ]
    return problems


# Names that hold TensorRT objects in the project's code: builder, network, parser, config, profile,
# engine, inspector, runtime, plugin registry (and the logger handed to them), alone or as a suffix.
TRT_OBJECT_NAME = re.compile(
    r"(?:^|_)(builder|network|parser|config|profile|engine|inspector|runtime|registry|logger)$"
)


def _is_any(node: ast.expr | None) -> bool:
    """``Any``, ``typing.Any``, ``X | Any`` or ``Optional[Any]`` (``dict[str, Any]`` is not: its keys are typed)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):  # a quoted annotation
        try:
            return _is_any(ast.parse(node.value, mode="eval").body)
        except SyntaxError:
            return False
    if isinstance(node, ast.Name):
        return node.id == "Any"
    if isinstance(node, ast.Attribute):
        return node.attr == "Any"
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _is_any(node.left) or _is_any(node.right)
    if isinstance(node, ast.Subscript) and ast.unparse(node.value).rsplit(".", 1)[-1] == "Optional":
        return _is_any(node.slice)
    return False


def _untyped_returns(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    """Names matching :data:`TRT_OBJECT_NAME` that ``function`` returns where its annotation says ``Any``."""
    annotation = function.returns
    positions: list[ast.expr | None] = [annotation]
    if (
        isinstance(annotation, ast.Subscript)
        and ast.unparse(annotation.value) in ("tuple", "Tuple", "typing.Tuple")
        and isinstance(annotation.slice, ast.Tuple)
    ):
        positions = list(annotation.slice.elts)
    found = []
    for node in ast.walk(function):
        if not isinstance(node, ast.Return) or node.value is None:
            continue
        values = node.value.elts if isinstance(node.value, ast.Tuple) and len(positions) > 1 else [node.value]
        for value, declared in zip(values, positions, strict=False):
            if isinstance(value, ast.Name) and TRT_OBJECT_NAME.search(value.id) and _is_any(declared):
                found.append(value.id)
    return sorted(set(found))


def untyped_tensorrt_objects(path: Path) -> list[str]:
    """TensorRT objects typed ``Any`` (or not at all), whose every use mypy would leave unchecked.

    A parameter or annotated variable named like a TensorRT object (:data:`TRT_OBJECT_NAME`:
    ``builder``, ``config``, ``engine``, ...) must carry a real type (``tensorrt.IBuilderConfig``,
    imported under ``TYPE_CHECKING``), and a function returning such a name must not declare ``Any``.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    where = path.relative_to(REPO) if path.is_relative_to(REPO) else path.name
    problems = []

    def flag(line: int, what: str, shown: str) -> None:
        problems.append(
            f"{where}:{line}: {what} `{shown}` hides a TensorRT object from the API check; annotate it with "
            "its tensorrt type imported under TYPE_CHECKING (docs/TRT_API_CHECK.md)"
        )

    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            arguments = node.args
            for arg in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]:
                if TRT_OBJECT_NAME.search(arg.arg) and (arg.annotation is None or _is_any(arg.annotation)):
                    shown = ast.unparse(arg.annotation) if arg.annotation is not None else "(unannotated)"
                    flag(arg.lineno, "parameter", f"{arg.arg}: {shown}")
            returned = _untyped_returns(node)
            if returned:
                flag(
                    node.lineno, f"{node.name}() returns {', '.join(returned)} as", ast.unparse(node.returns)
                )
        elif (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and TRT_OBJECT_NAME.search(node.target.id)
            and _is_any(node.annotation)
        ):
            flag(node.lineno, "variable", f"{node.target.id}: {ast.unparse(node.annotation)}")
    return problems


def _repo_path(path: str, mirror: Path) -> str:
    try:
        rel = (mirror / path).resolve().relative_to(mirror.resolve())
    except ValueError:
        return path
    text = str(rel)
    return "plugins/" + text[len("sq_trt/plugins/") :] if text.startswith("sq_trt/plugins/") else text


def _write_config(path: Path, env: BindingsEnv | None, rtx: bool) -> None:
    true = [name for name, value in BACKEND_CONDITIONS if value != rtx]
    false = [name for name, value in BACKEND_CONDITIONS if value == rtx]
    lines = [
        "[mypy]",
        "python_version = 3.11",
        f"mypy_path = {env.pyi_root if env else ''}",
        "ignore_missing_imports = True",
        "follow_imports = silent",
        "check_untyped_defs = True",
        f"plugins = {PLUGIN}",
        f"always_true = {', '.join(true)}",
        f"always_false = {', '.join(false)}",
        "",
        "[mypy-tensorrt.*,tensorrt_bindings.*,tensorrt_rtx_bindings.*]",
        "ignore_errors = True",
        "",
        f"[mypy-{',mypy-'.join(f'{m}.*' for m in SKIPPED_IMPORTS)}]".replace(",mypy-", ","),
        "follow_imports = skip",
    ]
    path.write_text("\n".join(lines) + "\n")


def run_mypy(
    files: Sequence[Path], mirror: Path, env: BindingsEnv | None, work: Path, *, rtx: bool = False
) -> list[Finding]:
    """Run mypy over mirrored ``files``; ``env=None`` is the baseline with TensorRT unknown.

    Args:
        files: Mirror paths to check.
        mirror: The mirror root (for mapping paths back).
        env: The TensorRT API to check against, or None.
        work: A stable directory for the config and mypy's cache.
        rtx: Whether ``env`` is TensorRT-RTX (flips the backend conditions).

    Returns:
        The errors mypy reports, paths relative to the repository.
    """
    label = env.label.replace(" ", "-") if env else ("baseline-rtx" if rtx else "baseline")
    work.mkdir(parents=True, exist_ok=True)
    config = work / f"{label}.ini"
    _write_config(config, env, rtx)
    module = env.module if env else ""
    os_env = dict(os.environ)
    os_env["SQ_TRT_MYPY_ALIASES"] = (
        f"trt={module},trtp={module}.plugin" if env and not rtx else f"trt={module}"
    )
    os_env["SQ_TRT_MYPY_REQUIRE"] = (
        "tensorrt=tensorrt,tensorrt.plugin=tensorrt.plugin" if env and not rtx else f"{module}={module}"
    )
    if env is None:
        os_env["SQ_TRT_MYPY_ALIASES"] = os_env["SQ_TRT_MYPY_REQUIRE"] = ""
    os_env.pop("MYPYPATH", None)
    cmd = [
        sys.executable,
        "-m",
        "mypy",
        "--config-file",
        str(config),
        "--cache-dir",
        str(work / f"cache-{label}"),
    ]
    cmd += ["--no-error-summary", "--show-column-numbers", "--no-pretty", "--show-error-codes"]
    proc = subprocess.run(
        cmd + [str(f) for f in files],
        check=False,
        capture_output=True,
        text=True,
        cwd=mirror.parent,
        env=os_env,
        timeout=600,
    )
    if proc.returncode not in (0, 1) or "error: " not in proc.stdout and proc.returncode == 1:
        raise RuntimeError(
            f"mypy crashed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    findings = []
    for line in proc.stdout.splitlines():
        match = _LINE.match(line)
        if match:
            findings.append(
                Finding(
                    _repo_path(match["path"], mirror.parent),
                    int(match["line"]),
                    match["msg"],
                    match["code"] or "misc",
                )
            )
    return findings


@functools.cache
def _baseline(
    files: tuple[Path, ...], mirror: Path, work: Path, rtx: bool
) -> frozenset[tuple[str, int, str]]:
    # The same for every TensorRT version of a run: computed once per process.
    return frozenset(f.key() for f in run_mypy(files, mirror, None, work, rtx=rtx))


def conformance_errors(
    env: BindingsEnv,
    work: Path,
    *,
    repo: Path = REPO,
    edits: dict[str, list[tuple[str, str]]] | None = None,
    probe: dict[str, str] | None = None,
) -> tuple[list[Finding], list[str]]:
    """TensorRT API errors of the project's TensorRT code against ``env``.

    Args:
        env: The TensorRT (or TensorRT-RTX) API to check against.
        work: Stable working directory (mirror, configs, mypy caches).
        repo: Repository root.
        edits: Text replacements applied to the mirror (self-test).
        probe: Instead of the project, check these sources: ``{"trt_api_probe_x.py": text}``.

    Returns:
        ``(findings, checked)``: errors only the typed run reports, and the repo-relative files checked.
    """
    mirror_root = work / ("mirror-edited" if edits else "mirror")
    mirror = mirror_sources(mirror_root, repo, edits)
    rtx = env.module != "tensorrt"
    if probe is not None:
        assert all(name.startswith("trt_api_probe") for name in probe), (
            "probe modules are named trt_api_probe*"
        )
        for name, text in probe.items():
            if not (mirror_root / name).exists() or (mirror_root / name).read_text() != text:
                (mirror_root / name).write_text(text)
        checked, files = sorted(probe), [mirror_root / name for name in sorted(probe)]
    else:
        repo_files = tensorrt_files(repo)
        # The plugin is TensorRT-proper only: TensorRT-RTX cannot load Python plugins (see DESIGN.md).
        checked = [
            str(p.relative_to(repo)) for p in repo_files if not (rtx and p.is_relative_to(repo / "plugins"))
        ]
        files = [
            mirror_root / ("sq_trt/plugins/" + c[len("plugins/") :] if c.startswith("plugins/") else c)
            for c in checked
        ]
    baseline = _baseline(tuple(files), mirror, work, rtx)
    typed = run_mypy(files, mirror, env, work, rtx=rtx)
    return [f for f in typed if f.key() not in baseline], checked


def memoized_conformance(
    env: BindingsEnv, work: Path, memo: dict[str, tuple[list[Finding], list[str]]]
) -> tuple[list[Finding], list[str]]:
    """:func:`conformance_errors` for ``env``, computed once per ``memo`` (a session fixture)."""
    if env.label not in memo:
        memo[env.label] = conformance_errors(env, work)
    return memo[env.label]


def format_failure(label: str, findings: Iterable[Finding]) -> str:
    """A readable assertion message: one line per missing or misused API element, naming the version."""
    lines = [f.describe(label) for f in findings]
    return (
        f"The project's TensorRT code does not match the {label} Python API:\n  "
        + "\n  ".join(lines)
        + "\nFix the call, or guard it by backend/version (see docs/TRT_API_CHECK.md)."
    )


def clear_work(work: Path) -> None:
    """Remove a working directory (tests that want a cold mypy cache)."""
    shutil.rmtree(work, ignore_errors=True)
