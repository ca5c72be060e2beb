"""`sq-trt smooth`: apply SmoothQuant and save the smoothed checkpoint with its statistics."""

from __future__ import annotations

import argparse
import time
from typing import Any

from sq_trt.commands.common import add_config_args, add_model_args

HELP = "Apply SmoothQuant: fold per-channel factors into norms and linears (smoothed checkpoint)."
DESCRIPTION = (
    HELP
    + """

For every smoothing group (a norm or linear whose output feeds some linears) and input
channel j:  s_j = max|X_j|^alpha / max|W_j|^(1-alpha); the preceding op's output is divided
by s_j and the linears' column j multiplied by it, so the model computes the same function
(checked on a calibration sample) while its activations become easier to quantize.
Group names: layers.<i>.attn_in, layers.<i>.mlp_in (norm -> linears) and, with
--smooth-linear-pairs, layers.<i>.v_o and layers.<i>.up_down (linear -> linear).

--alpha auto searches each group's alpha on a grid, minimising that group's W8A8 output
error on calibration activations (re-read from the --act-scales manifest's data source).

--search-act-mode hybrid measures every quantized linear's output error under static
per-tensor and per-token activations, keeps static INT8 (TensorRT's native path) wherever
the static error is within --search-plan-threshold times the per-token one, spends per-token
quantization (at most --search-plan-budget of the linear FLOPs) where outlier tokens live,
searches each group's alpha for the modes its linears will run in, and writes the plan as
quant_plan.json (then: sq-trt export --smoothed DIR --act-mode hybrid).

The output directory holds the Hugging Face checkpoint (config.json, model.safetensors,
tokenizer files), smoothing.safetensors (group -> factor), act_scales.safetensors (the
statistics of the smoothed model) and manifest.json (alphas, fingerprints).

examples:
  sq-trt smooth --model demo --act-scales work/act_scales --out work/smoothed
  sq-trt smooth --model demo --act-scales work/act_scales --alpha auto --smooth-linear-pairs \\
      --search-act-mode per_tensor --out work/smoothed
  sq-trt smooth --model demo --act-scales work/act_scales --alpha auto --smooth-linear-pairs \\
      --search-act-mode hybrid --search-force-per-token '*.down_proj' --out work/smoothed-hybrid
  sq-trt smooth --model demo --act-scales work/act_scales --alpha 0.5 \\
      --alpha-override 'layers.*.up_down=0.8' --alpha-override 'layers.0.*=auto' --out work/smoothed
"""
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Model, statistics, alpha and output arguments."""
    add_model_args(parser)
    parser.add_argument(
        "--act-scales", required=True, help="act_scales artifact of --model (sq-trt calibrate)"
    )
    from sq_trt.smooth.config import AlphaSearchConfig, SmoothConfig

    # The fields of SmoothConfig (the recipe's smooth section); --alpha and --alpha-override
    # are written by hand because their text forms (a number or auto, GLOB=ALPHA) are parsed.
    alpha = parser.add_argument_group("alpha")
    alpha.add_argument(
        "--alpha", default="0.5", help="migration strength in [0, 1] for every group, or 'auto' (default 0.5)"
    )
    alpha.add_argument(
        "--alpha-override",
        action="append",
        default=[],
        metavar="GLOB=ALPHA",
        help="per-group alpha, e.g. 'layers.3.*=0.7' or 'layers.*.up_down=auto' (repeatable; last match wins)",
    )
    add_config_args(alpha, SmoothConfig, ("include_optional", "min_scale"))
    add_config_args(parser.add_argument_group("alpha search"), AlphaSearchConfig, prefix="search")
    out = parser.add_argument_group("output")
    out.add_argument(
        "--out", default="work/smoothed", help="artifact directory to write (default work/smoothed)"
    )
    out.add_argument("--force", action="store_true", help="replace --out if it exists")
    out.add_argument("--no-progress", action="store_true", help="no progress bars")


def _config(args: argparse.Namespace) -> Any:
    from sq_trt.commands.common import config_values
    from sq_trt.errors import ConfigError
    from sq_trt.smooth.config import AlphaSearchConfig, SmoothConfig
    from sq_trt.smooth.stage import AUTO, parse_override

    if args.alpha == AUTO:
        alpha: Any = AUTO
    else:
        try:
            alpha = float(args.alpha)
        except ValueError:
            raise ConfigError(f"--alpha must be a number in [0, 1] or 'auto', got {args.alpha!r}") from None
    search = AlphaSearchConfig.create(
        labels={name: f"--search-{name.replace('_', '-')}" for name in AlphaSearchConfig.model_fields},
        **config_values(AlphaSearchConfig, args, prefix="search"),
    )
    return SmoothConfig.create(
        labels={"alpha": "--alpha"},
        alpha=alpha,
        overrides=tuple(parse_override(text) for text in args.alpha_override),
        include_optional=args.include_optional,
        min_scale=args.min_scale,
        search=search,
    )


def calibration_chunks(meta: dict[str, Any], tokenizer: Any) -> Any:
    """Re-create the calibration chunks an act_scales artifact was recorded on (checked by hash)."""
    from sq_trt.data import TextSlice, load_text, tokenize_chunks
    from sq_trt.errors import ArtifactError

    data = meta.get("data") or {}
    if not isinstance(data, dict) or "chars" not in data:
        raise ArtifactError("the act_scales manifest records no calibration data; rerun sq-trt calibrate")
    chars, seq_len, samples = data.get("chars"), meta.get("seq_len"), meta.get("num_samples")
    if not (
        isinstance(data.get("source"), str)
        and isinstance(chars, list)
        and len(chars) == 2
        and all(isinstance(c, int) and c >= 0 for c in chars)
        and isinstance(seq_len, int)
        and isinstance(samples, int)
    ):
        raise ArtifactError(
            "the act_scales manifest's calibration record (data.source, data.chars, seq_len, num_samples) "
            "has fields of the wrong type; it is corrupt, rerun sq-trt calibrate"
        )
    text = load_text(data["source"], text_column=meta.get("text_column", "text"))
    start, end = data["chars"]
    calibration = TextSlice(data["source"], "calibration", start, end, text[start:end], data["source_hash"])
    if calibration.text_hash != data.get("text_hash"):
        raise ArtifactError(
            f"the calibration text of {data['source']!r} has changed since calibration ({calibration.text_hash} "
            f"!= {data.get('text_hash')}); rerun sq-trt calibrate"
        )
    return tokenize_chunks(tokenizer, calibration, seq_len=meta["seq_len"], max_chunks=meta["num_samples"])


def run(args: argparse.Namespace) -> int:
    """Parse -> SmoothConfig -> load the model and its statistics -> :func:`sq_trt.smooth.stage.run` -> print."""
    from sq_trt.artifacts import claim_output, load_act_scales
    from sq_trt.commands.common import load_model_from_args
    from sq_trt.models.loading import check_device
    from sq_trt.smooth import stage as smooth

    config = _config(args)
    claim_output(args.out, force=args.force, inputs=(args.model, args.act_scales))
    check_device(args.device)
    started = time.perf_counter()
    loaded = load_model_from_args(args)
    scales = load_act_scales(args.act_scales, model=loaded.model)
    print(f"[smooth] model and act_scales loaded in {time.perf_counter() - started:.1f} s")
    chunks = calibration_chunks(scales.meta, loaded.tokenizer)
    stage_start = time.perf_counter()
    result = smooth.run(
        config,
        loaded=loaded,
        scales=scales,
        chunks=chunks,
        out=args.out,
        force=args.force,
        progress=not args.no_progress,
    )
    print(
        f"[smooth] {len(result.groups)} groups smoothed in {time.perf_counter() - stage_start:.1f} s; "
        f"outputs unchanged (max relative difference {result.max_difference:.2e}); "
        f"alphas: {smooth.describe_alphas(result.alphas)}"
    )
    if result.plan is not None:
        plan = result.plan
        print(
            f"[smooth] quant plan: {len(plan.names('per_tensor'))} linears static per tensor, "
            f"{len(plan.names('per_token'))} per token ({plan.per_token_flops_share():.1%} of the linear FLOPs); "
            "export it with --act-mode hybrid"
        )
    print(f"[smooth] total {time.perf_counter() - started:.1f} s")
    print(f"smoothed checkpoint written to {args.out} (alphas per group in its manifest.json)")
    return 0
