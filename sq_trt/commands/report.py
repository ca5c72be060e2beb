"""`sq-trt report`: write the HTML/Markdown/JSON accuracy report of a compare output."""

from __future__ import annotations

import argparse

from sq_trt.commands.common import add_config_args

HELP = "Write the HTML/Markdown/JSON accuracy report of a compare output."
DESCRIPTION = (
    HELP
    + """

Reads the directory `sq-trt compare` wrote and writes, into --out:
  report.html  one self-contained page (plots embedded, no external files): the gate
               verdict first, the metrics table per candidate, the per-layer error ranking
               with suggestions, the plots and the provenance (model, data hashes, versions,
               backend, GPU);
  report.md    the same summary in Markdown, plots referenced from plots/;
  report.json  the same content, machine-readable;
  plots/*.png  the figures.

The verdict is recomputed from the verified metrics and the gate conditions (every file of
--results is checked against its manifest); the exit code is 0 when the gate passed, 3 when it
failed (the report is written either way), 1 for a user error.

Optional inputs add plots: --calibration and --smoothed (the SmoothQuant picture: the
per-channel activation range of one linear before and after smoothing; --act-layer picks
it, default the layer with the strongest outlier channels) and --sweep (the alpha sweep
curve from a JSON file {"metric": "ppl", "baseline": 12.05, "points": [{"alpha": 0.5,
"ppl": 12.3}, ...]}).

examples:
  sq-trt report --results work/compare --out work/report
  sq-trt report --results work/compare --calibration work/act_scales --smoothed work/smoothed \\
      --sweep work/alpha_sweep.json --out work/report
"""
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Inputs, optional plot data and output."""
    from sq_trt.report.config import ReportOptions

    parser.add_argument("--results", required=True, metavar="DIR", help="the compare output directory")
    plots = parser.add_argument_group("optional plot data")
    plots.add_argument("--calibration", metavar="DIR", help="act_scales artifact of the original model")
    plots.add_argument("--smoothed", metavar="DIR", help="smoothed artifact (its act_scales after smoothing)")
    add_config_args(plots, ReportOptions)
    parser.add_argument(
        "--gate",
        action="append",
        default=None,
        metavar="COND",
        help="apply these gate conditions to the verified metrics instead of the comparison's own "
        "(repeatable; a recipe's `gate`)",
    )
    out = parser.add_argument_group("output")
    out.add_argument("--out", required=True, help="report directory to write")
    out.add_argument("--force", action="store_true", help="replace --out if it exists")


def run(args: argparse.Namespace) -> int:
    """Assemble and write the report; print where it is and the verdict."""
    from pathlib import Path

    from sq_trt.artifacts import claim_output
    from sq_trt.commands.common import config_from_args
    from sq_trt.errors import ConfigError, GateFailedError
    from sq_trt.report import activation_picture, load_sweep, write_report
    from sq_trt.report.config import ReportOptions

    options = config_from_args(ReportOptions, args)
    claim_output(args.out, force=args.force, inputs=(args.results, args.calibration, args.smoothed, args.sweep))
    if bool(args.calibration) != bool(args.smoothed):
        raise ConfigError(
            "--calibration and --smoothed go together (before and after smoothing); give both or neither"
        )
    activation = (
        activation_picture(args.calibration, args.smoothed, options.activation_layer) if args.calibration else None
    )
    sweep = load_sweep(options.sweep) if options.sweep else None
    report = write_report(
        args.results, args.out, activation=activation, sweep=sweep, gate=args.gate, force=args.force
    )
    passed = report.verdict.get("passed") is True  # recomputed from the verified metrics, never read back
    verdict = "PASSED" if passed else "FAILED"
    print(f"gate {verdict}; {len(report.plots)} plots; report: {Path(args.out) / 'report.html'}")
    if not passed:
        # The report was written; the exit code says what the pipeline's and compare's do: 3, do not ship.
        raise GateFailedError(f"accuracy gate failed; the report is in {args.out}")
    return 0
