"""`sq-trt export`: Export model.fp16.onnx and model.int8.onnx (explicit Q/DQ, per-tensor or per-token)."""

from __future__ import annotations

import argparse

from sq_trt.commands.common import add_config_args, add_model_args

HELP = "Export model.fp16.onnx and model.int8.onnx (explicit Q/DQ, per-tensor or per-token)."

DESCRIPTION = """\
Export the two ONNX files the engine builder consumes, into an artifact directory (--out):

  model.fp16.onnx   the FP16 baseline (TensorRT 11 is strongly typed: the precision is in the ONNX)
  model.int8.onnx   W8A8: int8 weight initializers with per-output-channel DequantizeLinear, and
                    activations quantized either
                      per_tensor  QuantizeLinear/DequantizeLinear with the calibrated constant scale
                                  amax/127 (needs act_scales), or
                      per_token   one scale per token, computed at run time (--per-token-encoding;
                                  auto: fused-gemm with TensorRT proper and a GPU, else portable):
                                    fused-gemm  one sq_trt W8A8 GEMM node per linear (TensorRT proper)
                                    plugin    sq_trt::PerTokenQuant node -> TensorRT plugin (sq_trt.plugins)
                                    portable  the same maths in standard ONNX ops (ONNX Runtime,
                                              TensorRT-RTX, or TensorRT without the plugin)

Every linear in attention and MLP is quantized; embeddings and the LM head stay in floating point.
The INT8 graph is linted for TensorRT's Q/DQ rules before it is written; manifest.json records the
I/O, settings, quantized/excluded linears, sizes and the hashes of the model and scales.

inputs: decoders take input_ids int64 [batch, seq] and return logits [batch, seq, vocab] (no KV cache);
BERT takes input_ids and attention_mask and returns last_hidden_state. Batch and seq are dynamic.

examples:
  sq-trt export --smoothed out/smooth --out out/export
  sq-trt export --smoothed out/smooth --act-mode per_tensor --out out/export-static
  sq-trt export --model demo --act-scales out/calib --per-token-encoding portable --out out/export-nosmooth
  sq-trt export --smoothed out/smooth --exclude '*.mlp.down_proj' --out out/export
  sq-trt export --smoothed out/smooth --with-past --per-token-encoding portable --out out/export-gen
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register this subcommand's arguments."""
    source = parser.add_argument_group("what to export")
    source.add_argument(
        "--smoothed",
        metavar="DIR",
        help="smoothed checkpoint (sq-trt smooth); brings its own act_scales. Takes precedence over --model",
    )
    source.add_argument(
        "--act-scales",
        metavar="DIR",
        help="act_scales artifact (sq-trt calibrate) of --model; required with --act-mode per_tensor",
    )
    add_model_args(parser, dtype=False)
    from sq_trt.export.config import ExportConfig

    # Every quantization flag is a field of ExportConfig, the recipe's export section and candidates.
    add_config_args(parser.add_argument_group("quantization"), ExportConfig)
    output = parser.add_argument_group("output")
    output.add_argument("--out", required=True, metavar="DIR", help="artifact directory to write")
    output.add_argument("--force", action="store_true", help="replace an existing --out directory")


def run(args: argparse.Namespace) -> int:
    """Load the model and scales, export, print where the files went."""
    from pathlib import Path

    from sq_trt.artifacts import claim_output, load_manifest
    from sq_trt.commands.common import config_from_args
    from sq_trt.export.config import ExportConfig
    from sq_trt.export.stage import export_model

    config = config_from_args(ExportConfig, args)
    claim_output(args.out, force=args.force, inputs=(args.model, args.smoothed, args.act_scales))
    inputs: dict[str, str] = {}
    plan = None
    if args.smoothed:
        from sq_trt.artifacts import load_smoothed
        from sq_trt.quant.plan import load_plan

        loaded, scales = load_smoothed(args.smoothed, device="cpu")
        inputs["smoothed"] = load_manifest(args.smoothed).fingerprint
        plan = load_plan(args.smoothed)
        if plan is not None:
            plan.smoothed = str(args.smoothed)
    else:
        from sq_trt.artifacts import verify_model_dir
        from sq_trt.models.loading import load_model

        verify_model_dir(args.model)
        loaded = load_model(
            args.model, local_files_only=args.local_files_only, trust_remote_code=args.trust_remote_code
        )
        scales = None
        if args.act_scales:
            from sq_trt.artifacts import load_act_scales

            scales = load_act_scales(args.act_scales, model=loaded.model)
            inputs["calibrate"] = load_manifest(args.act_scales).fingerprint
    result = export_model(
        loaded, args.out, scales=scales, config=config, inputs=inputs, force=args.force, plan=plan
    )
    sizes = result.sizes
    print(f"wrote {Path(args.out)}:")
    print(f"  {result.fp16_path.name}  {sizes['fp16'] / 2**20:8.1f} MiB")
    print(
        f"  {result.int8_path.name}  {sizes['int8'] / 2**20:8.1f} MiB  "
        f"({sizes['int8'] / sizes['fp16']:.2f} x FP16, {sizes['int8'] / sizes['fp32_estimate']:.2f} x FP32)"
    )
    print(f"  {len(result.quantized)} linears quantized ({config.act_mode}), {len(result.excluded)} excluded")
    if result.plan is not None and config.act_mode == "hybrid":
        share = result.plan.per_token_flops_share()
        print(
            f"  plan: {len(result.plan.names('per_tensor'))} linears static per tensor (TensorRT's native INT8), "
            f"{len(result.plan.names('per_token'))} per token ({share:.1%} of the linear FLOPs)"
        )
    if config.quantize_bmm:
        print("  attention BMM inputs (q, k, p, v) quantized per tensor, static (O3)")
    return 0
