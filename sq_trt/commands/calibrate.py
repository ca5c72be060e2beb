"""`sq-trt calibrate`: record activation ranges of every quantizable linear (act_scales artifact)."""

from __future__ import annotations

import argparse
import time

from sq_trt.commands.common import add_config_args, add_data_args, add_model_args

HELP = "Record per-channel activation ranges of every quantizable linear (act_scales artifact)."
DESCRIPTION = (
    HELP
    + """

Runs the model over --samples chunks of --seq-len tokens from the calibration part of
--data (the first --calib-fraction of the text; evaluation uses the rest) and records,
for every linear that will be quantized, the per-input-channel max |X| (the SmoothQuant
statistic), the per-tensor max |X| and the output range. Memory stays at one sample's
activations. The output directory holds act_scales.safetensors and manifest.json.

examples:
  sq-trt calibrate --model demo --out work/act_scales
  sq-trt calibrate --model tiny:llama --samples 4 --seq-len 128 --out /tmp/scales --force
  sq-trt calibrate --model ./my-llama --data corpus.jsonl --text-column text --out work/act_scales
"""
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Model, data and output arguments; --samples/--seq-len are the fields of CalibrateConfig."""
    from sq_trt.calibrate.stage import CalibrateConfig

    add_model_args(parser)
    add_data_args(parser, sizes=False)
    add_config_args(parser.add_argument_group("calibration"), CalibrateConfig)
    out = parser.add_argument_group("output")
    out.add_argument(
        "--out", default="work/act_scales", help="artifact directory to write (default work/act_scales)"
    )
    out.add_argument("--force", action="store_true", help="replace --out if it exists")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Parse -> CalibrateConfig -> load -> :func:`sq_trt.calibrate.stage.run` -> print."""

    from sq_trt.artifacts import claim_output
    from sq_trt.calibrate import stage as calibrate
    from sq_trt.commands.common import config_from_args, data_config_from_args, load_model_from_args
    from sq_trt.data import check_data_source, load_slices
    from sq_trt.models.loading import check_device, check_seq_len

    config = config_from_args(calibrate.CalibrateConfig, args)
    data = data_config_from_args(args)
    # Every input is checked before the model loads: no error after a full calibration.
    claim_output(args.out, force=args.force, inputs=(args.model, args.data))
    check_data_source(data.source, local_files_only=args.local_files_only)
    check_device(args.device)
    started = time.perf_counter()
    loaded = load_model_from_args(args)
    check_seq_len(loaded.model, config.seq_len)
    calibration, _ = load_slices(data.source, text_column=data.text_column, calib_fraction=data.calib_fraction)
    chunks = calibrate.calibration_chunks(config, loaded, calibration)
    if chunks.shape[0] < config.samples:
        print(f"note: the calibration text holds only {chunks.shape[0]} samples of {config.seq_len} tokens")
    print(f"[calibrate] model {args.model!r} loaded in {time.perf_counter() - started:.1f} s")
    stage_start = time.perf_counter()
    scales = calibrate.run(
        config,
        loaded=loaded,
        text=calibration,
        text_column=data.text_column,
        out=args.out,
        force=args.force,
        chunks=chunks,
        progress=not args.no_progress,
    )
    print(
        f"[calibrate] {len(scales.linears)} linears, {chunks.shape[0]} x {chunks.shape[1]} tokens in "
        f"{time.perf_counter() - stage_start:.1f} s (total {time.perf_counter() - started:.1f} s)"
    )
    print(f"act_scales written to {args.out}")
    return 0
