"""Ahead-of-time compilation of the Triton kernels to PTX, with an on-disk cache.

``triton.compile(ASTSource(...), target=GPUTarget("cuda", cc, 32))`` needs no
GPU: Triton lowers to PTX with its bundled LLVM and checks it with its bundled
``ptxas``. TensorRT embeds the PTX in the engine and launches it itself with
exactly the pointers and integer scalars of the kernel's Python signature.

Two adjustments make Triton's PTX fit that launcher:

* Triton appends hidden pointer parameters to every kernel (global and profile
  scratch). TensorRT does not pass them, and a kernel declaring more parameters
  than its launcher passes reads past the launcher's argument array. When the
  kernel needs no scratch memory and never reads those parameters, they are
  removed from the ``.entry`` declaration (:func:`strip_hidden_params`);
  otherwise compilation is refused.
* Triton writes the newest PTX ISA its ``ptxas`` knows (9.x for CUDA 13), which
  an older driver cannot load. The ISA version is pinned (default
  :data:`DEFAULT_PTX_VERSION`, CUDA 12.4 and newer drivers).

A third one makes it fast: TensorRT passes bare pointers and integers, so Triton knows nothing
about their alignment unless told. ``divisibility`` hints (``tt.divisibility``, the specialization
Triton's JIT derives on its own from the launch arguments) let it prove 16-byte aligned rows and
emit ``cp.async`` / vector loads; without them every int8 tile is loaded one byte at a time.
A hint is a promise about every launch: the caller guarantees it (see ``gemm.py``'s alignment
contract).

Compiled PTX is cached under ``<cache_dir>/ptx/`` keyed by the kernel's source
hash, signature, constants, architecture, options and Triton version.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sq_trt.artifacts import atomic_write_text, hash_json
from sq_trt.deps import require
from sq_trt.errors import ConfigError, SqTrtError

# Compute capabilities tested to compile here (A100, RTX 30xx/A10, L4/RTX 40xx, H100).
SUPPORTED_ARCHS = (80, 86, 89, 90)
# PTX ISA 8.4: loadable by CUDA 12.4+ drivers, enough for every instruction these kernels use.
DEFAULT_PTX_VERSION = 84


class KernelCompileError(SqTrtError):
    """A kernel could not be compiled to PTX that TensorRT can launch."""


@dataclass(frozen=True)
class PtxMetadata:
    """What a launcher needs besides the PTX text, and where it came from."""

    kernel_name: str
    arch: int
    ptx_version: int
    num_warps: int
    shared_mem: int
    num_params: int
    stripped_params: int
    triton_version: str
    compile_seconds: float
    cache_hit: bool = False
    # Runtime parameter -> the power of two every launch's value (pointer: address) is a multiple of.
    divisibility: dict[str, int] = field(default_factory=dict)


def normalize_arch(arch: int | str) -> int:
    """``80``, ``"80"``, ``"8.0"``, ``"sm_80"`` or ``"sm_90a"`` -> ``80`` / ``90``.

    Raises:
        ConfigError: Not a compute capability, or one outside :data:`SUPPORTED_ARCHS`.
    """
    text = str(arch).strip().lower().removeprefix("sm_").rstrip("a")
    match = re.fullmatch(r"(\d{1,2})\.?(\d)", text)
    if match is None:
        raise ConfigError(
            f"GPU architecture {arch!r} is not a compute capability; expected e.g. 80, '8.6' or 'sm_89'"
        )
    value = int(match.group(1) + match.group(2))
    if value >= 100:
        # Triton 3.9 does compile the kernels for sm_100a (tcgen05 int8 MMA) and sm_120a (mma.sync),
        # but only to PTX ISA >= 8.6 / 8.7, and nothing here has run them: refused until tested.
        raise ConfigError(
            f"GPU architecture sm_{value} (Blackwell) is not supported by the plugin kernels yet (its PTX needs "
            f"ISA >= 8.6 and is untested); supported: {', '.join(f'sm_{a}' for a in SUPPORTED_ARCHS)}; "
            "use the portable per-token encoding (no plugin) on Blackwell"
        )
    if value not in SUPPORTED_ARCHS:
        raise ConfigError(
            f"GPU architecture sm_{value} is not supported by the plugin kernels; supported: "
            f"{', '.join(f'sm_{a}' for a in SUPPORTED_ARCHS)}"
        )
    return value


def cache_root() -> Path:
    """Directory of the PTX cache: ``<sq-trt cache>/ptx``."""
    from sq_trt.models.demo import cache_dir

    return cache_dir() / "ptx"


_ENTRY_RE = re.compile(r"\.entry\s+(?P<name>[A-Za-z_$][\w$]*)\s*\((?P<params>[^)]*)\)", re.DOTALL)


def strip_hidden_params(ptx: str, kernel_name: str, num_user_params: int) -> tuple[str, int]:
    """Drop the trailing parameters Triton adds beyond the kernel's own ones.

    Args:
        ptx: PTX text with one ``.entry kernel_name(...)``.
        kernel_name: The entry's name.
        num_user_params: Parameters the launcher passes (pointers and scalars of
            the Python signature, constexprs excluded).

    Returns:
        ``(ptx, removed)``: the rewritten PTX and how many parameters were removed.

    Raises:
        KernelCompileError: No such entry, fewer parameters than expected, or a
            hidden parameter the kernel body reads (it really needs scratch memory).
    """
    match = next((m for m in _ENTRY_RE.finditer(ptx) if m.group("name") == kernel_name), None)
    if match is None:
        raise KernelCompileError(f"the PTX has no `.entry {kernel_name}`; Triton's output format changed")
    params = [p.strip() for p in match.group("params").split(",") if p.strip()]
    if len(params) < num_user_params:
        raise KernelCompileError(
            f"`{kernel_name}` declares {len(params)} PTX parameters, fewer than the {num_user_params} "
            "of its signature"
        )
    hidden = params[num_user_params:]
    for decl in hidden:
        name = decl.split()[-1]
        if len(re.findall(rf"\b{re.escape(name)}\b", ptx)) > 1:
            raise KernelCompileError(
                f"`{kernel_name}` reads its hidden parameter {name} (Triton scratch memory), which "
                "TensorRT's AOT launcher does not pass; the kernel cannot run as a TensorRT AOT plugin"
            )
    if not hidden:
        return ptx, 0
    kept = ",\n\t".join(params[:num_user_params])
    rewritten = ptx[: match.start("params")] + "\n\t" + kept + "\n" + ptx[match.end("params") :]
    return rewritten, len(hidden)


def divisibility_attrs(
    kernel: Any, signature: Mapping[str, str], divisibility: Mapping[str, int]
) -> dict[tuple[int, ...], list[list[Any]]]:
    """``ASTSource`` attributes that tell Triton what each hinted parameter is a multiple of.

    Args:
        kernel: The ``triton.jit`` function.
        signature: Its runtime parameters (see :func:`compile_ptx`).
        divisibility: Parameter name -> a power of two (bytes for a pointer's address).

    Returns:
        ``{(argument index,): [["tt.divisibility", d]]}``.

    Raises:
        ConfigError: A name that is not a runtime parameter, or a divisor that is not a power of two.
    """
    attrs: dict[tuple[int, ...], list[list[Any]]] = {}
    for name, divisor in divisibility.items():
        if name not in signature:
            raise ConfigError(
                f"divisibility hint for {name!r}, which is not a runtime parameter of `{kernel.__name__}` "
                f"({list(signature)})"
            )
        if divisor < 1 or divisor & (divisor - 1):
            raise ConfigError(f"divisibility hint {name}={divisor} is not a power of two")
        if divisor > 1:
            attrs[(kernel.arg_names.index(name),)] = [["tt.divisibility", divisor]]
    return attrs


def _cache_key(
    kernel: Any, signature: Mapping[str, str], constexprs: Mapping[str, Any], options: dict
) -> str:
    import triton

    return hash_json(
        {
            "kernel": kernel.__name__,
            "source": kernel.cache_key,
            "signature": dict(signature),
            "constexprs": {k: repr(v) for k, v in constexprs.items()},
            "options": options,
            "triton": triton.__version__,
            "format": 3,
        }
    ).removeprefix("sha256:")[:32]


def compile_ptx(
    kernel: Any,
    signature: Mapping[str, str],
    constexprs: Mapping[str, Any],
    arch: int | str,
    *,
    num_warps: int = 4,
    num_stages: int | None = None,
    ptx_version: int = DEFAULT_PTX_VERSION,
    divisibility: Mapping[str, int] | None = None,
    use_cache: bool = True,
) -> tuple[str, str, PtxMetadata]:
    """Compile a ``@triton.jit`` kernel to PTX for one GPU architecture, no GPU needed.

    Args:
        kernel: The ``triton.jit`` function.
        signature: Parameter name -> Triton type (``"*fp16"``, ``"i32"``...) for
            every runtime parameter, in order; constexpr parameters are filled in.
        constexprs: Value of every ``tl.constexpr`` parameter.
        arch: Compute capability (see :func:`normalize_arch`).
        num_warps: Warps per program (``block_x = 32 * num_warps``).
        num_stages: Software-pipelining depth of ``tl.dot`` loops (None: Triton's default).
        ptx_version: PTX ISA version times ten (84 = ISA 8.4).
        divisibility: Runtime parameter -> power of two its every value is a multiple of
            (:func:`divisibility_attrs`); None: no hints, Triton assumes nothing.
        use_cache: Read and write the on-disk cache.

    Returns:
        ``(kernel_name, ptx_text, metadata)``; the PTX's ``.entry`` takes exactly
        the runtime parameters of ``signature``, in order.

    Raises:
        ConfigError: Unsupported architecture, or a signature that does not
            name every runtime parameter of the kernel.
        KernelCompileError: Triton failed, or the PTX needs scratch memory.
    """
    triton = require("triton", stage="build (plugin kernels)")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    cc = normalize_arch(arch)
    runtime_params = [n for n in kernel.arg_names if n not in constexprs]
    if list(signature) != runtime_params:
        raise ConfigError(
            f"signature for `{kernel.__name__}` names {list(signature)}; expected its runtime parameters "
            f"{runtime_params} in order (constexprs: {list(constexprs)})"
        )
    hints = dict(sorted((divisibility or {}).items()))
    attrs = divisibility_attrs(kernel, signature, hints)
    options: dict[str, Any] = {"num_warps": num_warps, "ptx_version": ptx_version, "enable_fp_fusion": False}
    if num_stages is not None:
        options["num_stages"] = num_stages
    key = _cache_key(kernel, signature, constexprs, {**options, "arch": cc, "divisibility": hints})
    ptx_path = cache_root() / f"{kernel.__name__}-sm{cc}-{key}.ptx"
    meta_path = ptx_path.with_suffix(".json")
    if use_cache and ptx_path.is_file() and meta_path.is_file():
        try:
            meta = PtxMetadata(**{**json.loads(meta_path.read_text()), "cache_hit": True})
            return meta.kernel_name, ptx_path.read_text(), meta
        except (json.JSONDecodeError, TypeError):
            pass  # a corrupt entry is recompiled and overwritten

    full_signature = {n: signature.get(n, "constexpr") for n in kernel.arg_names}
    start = time.perf_counter()
    try:
        with triton.knobs.compilation.scope():
            # Line-number directives would embed this machine's source paths in every engine
            # (engines would differ by install location) and double the PTX size.
            triton.knobs.compilation.disable_line_info = True
            compiled = triton.compile(
                ASTSource(fn=kernel, signature=full_signature, constexprs=dict(constexprs), attrs=attrs),
                target=GPUTarget("cuda", cc, 32),
                options=options,
            )
    except Exception as exc:  # Triton raises many types; the message is what matters
        raise KernelCompileError(f"Triton could not compile `{kernel.__name__}` for sm_{cc}: {exc}") from exc
    seconds = time.perf_counter() - start
    md = compiled.metadata
    if getattr(md, "global_scratch_size", 0) or getattr(md, "profile_scratch_size", 0):
        raise KernelCompileError(
            f"`{kernel.__name__}` needs Triton scratch memory, which TensorRT's AOT launcher does not provide"
        )
    ptx, removed = strip_hidden_params(compiled.asm["ptx"], md.name, len(runtime_params))
    meta = PtxMetadata(
        kernel_name=md.name,
        arch=cc,
        ptx_version=ptx_version,
        num_warps=md.num_warps,
        shared_mem=md.shared,
        num_params=len(runtime_params),
        stripped_params=removed,
        triton_version=triton.__version__,
        compile_seconds=round(seconds, 4),
        divisibility=hints,
    )
    if use_cache:
        try:
            atomic_write_text(ptx_path, ptx)
            # Written last: an entry counts only once its metadata exists.
            atomic_write_text(meta_path, json.dumps(asdict(meta), indent=2, sort_keys=True) + "\n")
        except OSError:
            pass  # a read-only cache (e.g. a container's home) only costs a recompile next time
    return meta.kernel_name, ptx, meta
