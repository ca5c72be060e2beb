"""PTX audit of every plugin's AOT variants: the speed the PTX promises, checked with no GPU.

Integer MMA in the PTX proves INT8 arithmetic, not speed. For every plugin, architecture and
variant (autotune tactic for the GEMMs), compiled exactly as the plugin's ``aot_impl`` compiles
it, the audit reads the PTX and NVIDIA's ``ptxas -v`` and applies these rules:

* GEMMs: integer tensor-core MMA (``mma.sync ... s8`` / ``wgmma ... s8``) and no float MMA;
* GEMMs: the int8 operand tiles are loaded asynchronously or vectorized (``cp.async``, TMA
  ``cp.async.bulk``, ``ld.global.v4``/``.v2``) and no global load anywhere reads a single byte
  (``ld.global.{s8,u8,b8}``), so the main loop has none either;
* every variant: 0 bytes spilled to local memory, and shared memory (Triton's dynamic
  allocation plus any static) within :data:`SHARED_LIMIT_BYTES`.

``ptxas`` comes from NVIDIA's ``nvidia-cuda-nvcc-cu12`` wheel (the ``dev`` extra), else the copy
inside Triton's wheel (:func:`find_ptxas`). Its reports are cached next to the PTX cache, keyed by
the PTX's hash, the architecture and the ``ptxas`` binary, so a warm audit takes seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sq_trt.artifacts import atomic_write_text
from sq_trt.errors import ConfigError

# Shared memory a kernel may use without cudaFuncSetAttribute(MaxDynamicSharedMemorySize), which
# TensorRT's AOT launcher is not known to call: 48 KiB on every supported architecture.
SHARED_LIMIT_BYTES = 48 * 1024
# Environment variable naming a ptxas binary to use instead of the wheels' (e.g. a CUDA toolkit's).
PTXAS_ENV = "SQ_TRT_PTXAS"

_LOAD_PATTERNS = {
    "cp.async": re.compile(r"^\s*(?:@\S+\s+)?cp\.async\.c[ag]\b", re.MULTILINE),
    "tma": re.compile(r"^\s*(?:@\S+\s+)?cp\.async\.bulk\b", re.MULTILINE),
    "ld.v4": re.compile(r"^\s*(?:@\S+\s+)?ld\.global\S*\.v4\.", re.MULTILINE),
    "ld.v2": re.compile(r"^\s*(?:@\S+\s+)?ld\.global\S*\.v2\.", re.MULTILINE),
    "ld.byte": re.compile(r"^\s*(?:@\S+\s+)?ld\.global(?:\.[a-z0-9_:]+)*?\.[sub]8\s", re.MULTILINE),
}


@dataclass(frozen=True)
class PtxasReport:
    """What ``ptxas -v`` says about one kernel."""

    registers: int
    spill_stores: int
    spill_loads: int
    static_shared: int


@dataclass(frozen=True)
class AuditRow:
    """One audited variant and the rules it breaks (empty: it passes)."""

    plugin: str
    arch: int
    variant: str
    mma: str
    loads: dict[str, int]
    registers: int
    spill_bytes: int
    shared_bytes: int
    failures: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """No rule broken."""
        return not self.failures


_ANY_GLOBAL_LOAD = re.compile(r"^\s*(?:@\S+\s+)?ld\.global\.", re.MULTILINE)


def load_kinds(ptx: str) -> dict[str, int]:
    """How many global loads of each kind a PTX text has.

    Returns:
        ``cp.async``, ``tma``, ``ld.v4``, ``ld.v2``, ``ld.byte`` (scalar 8-bit) and ``ld.scalar``
        (every other scalar ``ld.global``: epilogue vectors, per-token rows).
    """
    kinds = {kind: len(pattern.findall(ptx)) for kind, pattern in _LOAD_PATTERNS.items()}
    vector_or_byte = kinds["ld.v4"] + kinds["ld.v2"] + kinds["ld.byte"]
    kinds["ld.scalar"] = len(_ANY_GLOBAL_LOAD.findall(ptx)) - vector_or_byte
    return kinds


def find_ptxas() -> Path:
    """NVIDIA's ``ptxas``: ``$SQ_TRT_PTXAS``, the ``nvidia-cuda-nvcc-cu12`` wheel's, else Triton's copy.

    Raises:
        ConfigError: None is installed.
    """
    if os.environ.get(PTXAS_ENV):
        path = Path(os.environ[PTXAS_ENV])
        if not path.is_file():
            raise ConfigError(f"{PTXAS_ENV}={path} is not a file; unset it or point it at a ptxas binary")
        return path
    import importlib.util

    candidates = []
    for package, relative in (("nvidia.cuda_nvcc", "bin/ptxas"), ("triton", "backends/nvidia/bin/ptxas")):
        try:
            spec = importlib.util.find_spec(package)
        except ModuleNotFoundError:  # the parent namespace (`nvidia`) is not installed either
            spec = None
        roots = (spec.submodule_search_locations or []) if spec is not None else []
        candidates += [Path(root) / relative for root in roots]
    for path in candidates:
        if path.is_file():
            return path
    raise ConfigError(
        "no ptxas found: install the dev extra (pip install -e '.[dev]', brings nvidia-cuda-nvcc-cu12) "
        f"or the kernels extra (triton ships one), or set {PTXAS_ENV}"
    )


_PTXAS_INFO = re.compile(r"Used (\d+) registers")
_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_SMEM = re.compile(r"(\d+) bytes smem")


def parse_ptxas_verbose(text: str) -> PtxasReport:
    """Registers, spills and static shared memory from ``ptxas -v`` output (one kernel).

    Raises:
        ConfigError: The output has no resource-usage line (not ``ptxas -v`` of one kernel).
    """
    registers = _PTXAS_INFO.search(text)
    spills = _SPILLS.search(text)
    if registers is None or spills is None:
        raise ConfigError(f"ptxas -v printed no register/spill report: {text.strip()[-400:]!r}")
    smem = _SMEM.search(text)
    return PtxasReport(
        registers=int(registers.group(1)),
        spill_stores=int(spills.group(1)),
        spill_loads=int(spills.group(2)),
        static_shared=int(smem.group(1)) if smem else 0,
    )


def ptxas_report(ptx: str, arch: int, *, use_cache: bool = True) -> PtxasReport:
    """Assemble a PTX text for ``sm_<arch>`` (``sm_90a`` for Hopper's wgmma) and read ``ptxas -v``.

    Raises:
        ConfigError: No ptxas, or it refused the PTX (its message is included).
    """
    from sq_trt.plugins.aot import cache_root

    ptxas = find_ptxas()
    target = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"
    stat = ptxas.stat()
    key = hashlib.sha256(f"{ptx}|{target}|{ptxas}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[
        :32
    ]
    cached = cache_root() / "audit" / f"{key}.json"
    if use_cache and cached.is_file():
        try:
            return PtxasReport(**json.loads(cached.read_text()))
        except (json.JSONDecodeError, TypeError):
            pass  # a corrupt entry is rerun and overwritten
    with tempfile.TemporaryDirectory(prefix="sq-trt-audit-") as tmp:
        source = Path(tmp) / "kernel.ptx"
        source.write_text(ptx)
        proc = subprocess.run(
            [str(ptxas), "-v", f"-arch={target}", str(source), "-o", str(Path(tmp) / "kernel.cubin")],
            capture_output=True, text=True, check=False, timeout=300,
        )  # fmt: skip
    if proc.returncode != 0:
        raise ConfigError(
            f"{ptxas} refused the PTX for {target}: {(proc.stderr or proc.stdout).strip()[-600:]}"
        )
    report = parse_ptxas_verbose(proc.stdout + proc.stderr)
    if use_cache:
        try:
            atomic_write_text(cached, json.dumps(asdict(report), sort_keys=True) + "\n")
        except OSError:
            pass  # a read-only cache only costs a rerun
    return report


def _rules(
    is_gemm: bool, mma: Sequence[str], loads: dict[str, int], report: PtxasReport, shared: int
) -> list[str]:
    failures = []
    if is_gemm:
        if not mma or not all(".s8" in m or ".u8" in m for m in mma):
            failures.append(f"no integer-only MMA ({', '.join(sorted(set(mma))) or 'none'})")
        if loads["ld.byte"]:
            failures.append(f"{loads['ld.byte']} scalar byte loads (ld.global.{{s8,u8,b8}})")
        if not (loads["cp.async"] or loads["tma"] or loads["ld.v4"] or loads["ld.v2"]):
            failures.append("no cp.async / TMA / vector load of the operand tiles")
    spilled = report.spill_stores + report.spill_loads
    if spilled:
        failures.append(f"{spilled} bytes spilled")
    if shared > SHARED_LIMIT_BYTES:
        failures.append(f"{shared} B shared memory > {SHARED_LIMIT_BYTES}")
    return failures


def audit_ptx(
    plugin: str, arch: int, variant: str, ptx: str, dynamic_shared: int, *, is_gemm: bool
) -> AuditRow:
    """Apply the audit's rules to one compiled variant (see the module docstring)."""
    from sq_trt.plugins.catalog import mma_instructions

    mma = mma_instructions(ptx)
    loads = load_kinds(ptx)
    report = ptxas_report(ptx, arch)
    shared = dynamic_shared + report.static_shared
    kinds = sorted({re.sub(r"\.(row|col|sync|aligned|satfinite)\b", "", m) for m in mma})
    return AuditRow(
        plugin=plugin,
        arch=arch,
        variant=variant,
        mma=", ".join(kinds) or "-",
        loads=loads,
        registers=report.registers,
        spill_bytes=report.spill_stores + report.spill_loads,
        shared_bytes=shared,
        failures=tuple(_rules(is_gemm, mma, loads, report, shared)),
    )


def audit(
    plugins: Sequence[str], archs: Sequence[int | str], *, dtype: str = "fp16", alignment: str = "aligned"
) -> list[AuditRow]:
    """Compile and audit every variant of the named plugins for each architecture.

    Args:
        plugins: Plugin names (:data:`sq_trt.plugins.catalog.PLUGINS`).
        archs: Architectures (``sm_80``, ``90``...).
        dtype: Activation dtype of the variants.
        alignment: The GEMMs' variant: ``aligned`` (what every aligned weight gets) or
            ``unaligned`` (the fallback for weights that break the contract; it fails the load rule).

    Returns:
        One row per plugin, architecture and variant, in that order.
    """
    from sq_trt.plugins import catalog
    from sq_trt.plugins.aot import normalize_arch

    rows = []
    for name in plugins:
        info = catalog.plugin_info(name)
        is_gemm = not info.kernel.endswith("per_token_quant_kernel")
        for arch in archs:
            cc = normalize_arch(arch)
            for variant in catalog.compile_variants(info.name, cc, dtype=dtype, alignment=alignment):
                rows.append(
                    audit_ptx(
                        info.name, cc, variant.label, variant.ptx, variant.meta.shared_mem, is_gemm=is_gemm
                    )
                )
    return rows


def format_table(rows: Sequence[AuditRow]) -> str:
    """The audit as a Markdown table (one row per variant, a verdict column)."""
    head = (
        "| plugin | arch | variant | MMA | cp.async | TMA | ld.v4 | ld.v2 | byte loads | other scalar loads "
        "| registers | spill B | shared B | verdict |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        verdict = "ok" if r.ok else "FAIL: " + "; ".join(r.failures)
        lines.append(
            f"| {r.plugin} | sm_{r.arch} | {r.variant} | {r.mma} | {r.loads['cp.async']} | {r.loads['tma']} "
            f"| {r.loads['ld.v4']} | {r.loads['ld.v2']} | {r.loads['ld.byte']} | {r.loads['ld.scalar']} "
            f"| {r.registers} | {r.spill_bytes} "
            f"| {r.shared_bytes} | {verdict} |"
        )
    return "\n".join(lines)
