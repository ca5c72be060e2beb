"""`sq-trt build` (and the container's `build-engine`): ONNX -> TensorRT / TensorRT-RTX .plan + engine manifest."""

from __future__ import annotations

import argparse

from sq_trt.engine.backends import BACKEND_CHOICES, select_backend
from sq_trt.engine.builder import build_engine
from sq_trt.engine.recipe import load_recipe, resolve_settings
from sq_trt.errors import ConfigError

HELP = "Build TensorRT / TensorRT-RTX .plan engines from ONNX."
DESCRIPTION = """\
Build a strongly typed TensorRT or TensorRT-RTX engine from an exported ONNX and write
engines/<name>/<target>.plan plus engines/<name>/manifest.json (backend and version, GPU
target, profiles, I/O, plugins, source ONNX and calibration hashes).

A recipe (builders/<model>.<target>.yaml) fills every setting; flags override it:
  sq-trt build --recipe builders/smollm2-135m.rtx.yaml --onnx out/export/model.int8.onnx --name smollm2-int8

--backend auto takes TensorRT when it is importable and a GPU is visible, else TensorRT-RTX
(which builds on a CPU-only machine for RTX GPUs, compute capability 8.0/8.6/8.9/12.0).
"""


def _triple(text: str) -> tuple[int, int, int]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected MIN,OPT,MAX (three integers), got {text!r}")
    return values  # type: ignore[return-value]


def _batch_seq(text: str) -> dict[str, int]:
    try:
        batch, seq = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected BATCHxSEQ (e.g. 1x512), got {text!r}") from None
    return {"batch": batch, "seq": seq}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register this subcommand's arguments."""
    source = parser.add_argument_group("source and output")
    source.add_argument("--recipe", help="YAML build recipe (builders/*.yaml); flags override its values")
    source.add_argument("--onnx", help="ONNX file to build (e.g. the export stage's model.int8.onnx)")
    source.add_argument("--name", help="engine directory name under --engines-dir (e.g. smollm2-135m-int8)")
    source.add_argument("--target", help="engine file stem inside it (e.g. rtx, h100): <target>.plan")
    source.add_argument("--engines-dir", help="parent of the engine directories (default: engines)")
    source.add_argument("--force", action="store_true", help="replace an existing <target>.plan")
    backend = parser.add_argument_group("backend")
    backend.add_argument("--backend", choices=BACKEND_CHOICES, help="TensorRT flavour (default: auto)")
    backend.add_argument(
        "--compute-capability",
        action="append",
        dest="compute_capabilities",
        metavar="X.Y",
        help="TensorRT-RTX GPU target, repeatable (e.g. 8.9); default: TensorRT-RTX's set",
    )
    shapes = parser.add_argument_group("shapes (replace the recipe's profiles with one profile)")
    shapes.add_argument("--batch", type=_triple, metavar="MIN,OPT,MAX", help="batch-size range")
    shapes.add_argument("--seq", type=_triple, metavar="MIN,OPT,MAX", help="sequence-length range")
    shapes.add_argument(
        "--require",
        type=_batch_seq,
        action="append",
        metavar="BATCHxSEQ",
        help="a shape later stages need; the build is refused if no profile covers it (repeatable)",
    )
    gen = parser.add_argument_group(
        "generation engines (an `export --with-past` graph: prefill + decode profiles)"
    )
    gen.add_argument("--max-batch", type=int, help="sequences per step (recipe: generation.max_batch)")
    gen.add_argument("--max-input", type=int, help="longest prompt of one prefill (generation.max_input)")
    gen.add_argument("--max-context", type=int, help="prompt + generated tokens (generation.max_context)")
    tuning = parser.add_argument_group("builder")
    tuning.add_argument("--opt-level", type=int, help="builder optimization level 0-5 (default 3)")
    tuning.add_argument("--workspace-mb", type=int, help="workspace memory-pool limit in MiB")
    tuning.add_argument(
        "--timing-cache", help="timing cache file to load and update (TensorRT only; TensorRT-RTX has none)"
    )
    parser.add_argument("--verbose", action="store_true", help="echo TensorRT's info messages")


def run(args: argparse.Namespace) -> int:
    """Resolve the settings, pick the backend, build, print where the engine went."""
    recipe = load_recipe(args.recipe) if args.recipe else {}
    overrides = {
        "onnx": args.onnx,
        "name": args.name,
        "target": args.target,
        "engines_dir": args.engines_dir,
        "backend": args.backend,
        "compute_capabilities": args.compute_capabilities,
        "required_shapes": args.require,
        "opt_level": args.opt_level,
        "workspace_mb": args.workspace_mb,
        "timing_cache": args.timing_cache,
    }
    if args.batch or args.seq:
        profiles = recipe.get("profiles") or [{}]
        if not isinstance(profiles, list) or not isinstance(profiles[0], dict):
            raise ConfigError(
                f"recipe {args.recipe}: `profiles` must be a list of mappings, got {str(profiles)[:60]!r}"
            )
        base = dict(profiles[0])
        base.pop("shapes", None)
        if args.batch:
            base["batch"] = args.batch
        if args.seq:
            base["seq"] = args.seq
        overrides["profiles"] = [base]
    limits = {"max_batch": args.max_batch, "max_input": args.max_input, "max_context": args.max_context}
    if any(value is not None for value in limits.values()):
        given = {key: value for key, value in limits.items() if value is not None}
        overrides["generation"] = {**dict(recipe.get("generation") or {}), **given}
    settings = resolve_settings(recipe, overrides, source=args.recipe or "the command line")
    backend, reason = select_backend(settings.backend)
    print(f"[build] {reason}")
    record = build_engine(settings, backend, force=args.force, verbose=args.verbose)
    print(
        f"[build] done: {settings.engines_dir / str(settings.name) / record.plan} "
        f"({record.plan_bytes / 2**20:.1f} MiB, {record.backend} {record.backend_version}, "
        f"build {record.build_seconds:.2f}s)"
    )
    return 0
