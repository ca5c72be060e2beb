"""`sq-trt build` (and the container's `build-engine`): ONNX -> TensorRT / TensorRT-RTX .plan + engine manifest."""

from __future__ import annotations

import argparse
from typing import Any

from sq_trt.artifacts import claim_output
from sq_trt.commands.common import add_config_args, config_values
from sq_trt.engine.backends import select_backend
from sq_trt.engine.builder import build_engine
from sq_trt.engine.recipe import BuildSettings, load_recipe, resolve_settings
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


def _batch_seq(text: str) -> dict[str, int]:
    try:
        batch, seq = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected BATCHxSEQ (e.g. 1x512), got {text!r}") from None
    return {"batch": batch, "seq": seq}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register this subcommand's arguments: one flag per field of BuildSettings / BuildOptions.

    Every flag defaults to "not given" (None), so a recipe's value stands unless a flag replaces it.
    """
    from sq_trt.engine.config import GenerationLimits
    from sq_trt.engine.profiles import ProfileSpec

    source = parser.add_argument_group("source and output")
    source.add_argument("--recipe", help="YAML build recipe (builders/*.yaml); flags override its values")
    add_config_args(source, BuildSettings, ("onnx", "name", "target", "engines_dir"), unset=True)
    source.add_argument("--force", action="store_true", help="replace an existing <target>.plan")
    backend = parser.add_argument_group("backend")
    add_config_args(backend, BuildSettings, ("backend", "compute_capabilities"), unset=True)
    shapes = parser.add_argument_group("shapes (replace the recipe's profiles with one profile)")
    add_config_args(shapes, ProfileSpec, ("batch", "seq"), unset=True)
    shapes.add_argument(
        "--require",
        type=_batch_seq,
        action="append",
        metavar="BATCHxSEQ",
        help="a shape later stages need; the build is refused if no profile covers it (repeatable)",
    )
    gen = parser.add_argument_group(
        "generation engines (an `export --with-past` graph: prefill + decode profiles; recipe: generation.*)"
    )
    add_config_args(gen, GenerationLimits, unset=True)
    add_config_args(
        parser.add_argument_group("builder"), BuildSettings, ("opt_level", "workspace_mb", "timing_cache"), unset=True
    )
    parser.add_argument("--verbose", action="store_true", help="echo TensorRT's info messages")


def _profile_override(recipe: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]] | None:
    """``--batch`` / ``--seq``: the recipe's first profile with those ranges, as the only profile."""
    if not (args.batch or args.seq):
        return None
    profiles = recipe.get("profiles") or [{}]
    if not isinstance(profiles, list) or not isinstance(profiles[0], dict):
        raise ConfigError(f"recipe {args.recipe}: `profiles` must be a list of mappings, got {str(profiles)[:60]!r}")
    base = dict(profiles[0])
    base.pop("shapes", None)
    if args.batch:
        base["batch"] = args.batch
    if args.seq:
        base["seq"] = args.seq
    return [base]


def _generation_override(recipe: dict[str, Any], args: argparse.Namespace) -> dict[str, Any] | None:
    """``--max-batch`` ...: merged over the recipe's ``generation`` section."""
    from sq_trt.engine.config import GenerationLimits

    given = {key: value for key, value in config_values(GenerationLimits, args).items() if value is not None}
    return {**dict(recipe.get("generation") or {}), **given} if given else None


def run(args: argparse.Namespace) -> int:
    """Resolve the settings, pick the backend, build, print where the engine went."""
    recipe = load_recipe(args.recipe) if args.recipe else {}
    overrides = {
        **config_values(BuildSettings, args),
        "required_shapes": args.require,
        "profiles": _profile_override(recipe, args),
        "generation": _generation_override(recipe, args),
    }
    settings = resolve_settings(recipe, overrides, source=args.recipe or "the command line")
    # One writer per engine directory: a build merges the other targets' engines already there.
    claim_output(settings.engines_dir / str(settings.name), force=True, what="engine directory")
    backend, reason = select_backend(settings.backend)
    print(f"[build] {reason}")
    record = build_engine(settings, backend, force=args.force, verbose=args.verbose)
    print(
        f"[build] done: {settings.engines_dir / str(settings.name) / record.plan} "
        f"({record.plan_bytes / 2**20:.1f} MiB, {record.backend} {record.backend_version}, "
        f"build {record.build_seconds:.2f}s)"
    )
    return 0
