"""`sq-trt matrix`: models x GPU targets x INT8 candidates, built and compared on a Ray cluster."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "Build and compare models x GPU targets x candidates on Ray (a local instance or a cluster)."
DEFAULT_RECIPE = "builders/matrix-demo.yaml"

DESCRIPTION = f"""\
{HELP}

Reads a matrix recipe (YAML with `kind: matrix`; default {DEFAULT_RECIPE}): models (pipeline
recipes), targets (a TensorRT backend and how Ray places its tasks: a custom resource, an
accelerator_type or node labels) and the candidates and gate they share. Each model's front end
(calibrate, smooth, export) runs once, on any node; each (model, candidate, target) builds,
compares and reports on a node of its target. Artifacts go to a shared store (an fsspec URL,
`store:`), keyed by the content hash of the stages that made them: a rerun runs only what is
missing. A live table shows every cell; at the end, matrix.html and matrix.json (work/<name>/).
Needs the `cluster` extra (ray, fsspec). Exit code: 0 every gate passed, 3 a gate failed,
1 a cell failed or a user error (the report is still written).

examples:
  sq-trt matrix                                           # the demo matrix on a local Ray instance
  sq-trt matrix --address 10.0.0.5:6379                   # join a running Ray cluster
  sq-trt matrix --set store=s3://bucket/sq-trt --set retries=3
  sq-trt matrix --set 'models.0.set=["calibrate.samples=8"]'
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register this subcommand's arguments."""
    parser.add_argument("--recipe", default=DEFAULT_RECIPE, help=f"matrix recipe (kind: matrix; default {DEFAULT_RECIPE})")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a matrix recipe field (value parsed as YAML; repeatable), e.g. --set retries=3",
    )
    parser.add_argument(
        "--address", help="Ray cluster to join (host:6379 or ray://host:10001; same as --set address=...); "
        "default: a local Ray instance"
    )
    parser.add_argument("--out", type=Path, help="write the report here instead of the recipe's work_dir")
    parser.add_argument("--force", action="store_true", help="drop this matrix's store entries first: run every cell")


def run(args: argparse.Namespace) -> int:
    """Load and validate the matrix recipe, run it, print where the report is; exit 3/1 on failed gates/cells."""
    from sq_trt.errors import GateFailedError, SqTrtError
    from sq_trt.matrix.config import load_matrix
    from sq_trt.matrix.stage import run as run_matrix

    overrides = [*([f"address={args.address}"] if args.address else []), *args.overrides]
    config, recipes = load_matrix(args.recipe, overrides)
    result = run_matrix(config, recipes=recipes, out=args.out, force=args.force)
    failed = result.failed
    if failed:
        first = failed[0]
        raise SqTrtError(
            f"{len(failed)} of {len(result.cells)} cells failed (first: {first['model']}/{first['candidate']}@"
            f"{first['target']}: {first['error']}); report {result.report}; rerun to finish the missing cells"
        )
    gate_failed = [c for c in result.cells if not c.get("passed")]
    if gate_failed:
        raise GateFailedError(f"{len(gate_failed)} of {len(result.cells)} cells failed their gate; report {result.report}")
    print(f"matrix: {len(result.cells)} cells, every gate passed; report {result.report}")
    return 0
