#!/usr/bin/env bash
# Container smoke checks: what a GPU run says, in under three minutes, before the full GPU-host kit.
# Run inside NVIDIA's TensorRT container (or the image from docker/Dockerfile) on a GPU host, from the
# repository root, with sq-trt installed (`pip install -e '.[trt,kernels]'`; the kit does this first):
#
#   bash docker/smoke.sh [OUT]          # default OUT: smoke-out
#
# One line per check, PASS or FAIL (INFO lines are context):
#   TensorRT / driver / GPU; calibrate and export the tiny random Llama as per-tensor, portable
#   per-token and plugin per-token INT8 ONNX; build each with TensorRT proper; run each engine once
#   through Polygraphy against ONNX Runtime; load each .plan in a fresh process that imports only
#   tensorrt (no Python plugin registered: AOT plugin kernels are embedded in the engine).
# Exit code: 0 when every check passed, 1 otherwise.
#
# SQ_TRT_SMOKE_UNTIL=export stops before the first TensorRT call (what a CPU-only machine can run;
# tests/unit/test_smoke.py does). SMOKE_STEP_TIMEOUT bounds each step (seconds, default 150).
set -uo pipefail

OUT="${1:-smoke-out}"
UNTIL="${SQ_TRT_SMOKE_UNTIL:-all}"
STEP_TIMEOUT="${SMOKE_STEP_TIMEOUT:-150}"
PYTHON="${PYTHON:-python3}"
failures=0

log() { printf '[smoke] %s\n' "$*" >&2; }

# run_step NAME ARGS...: one `python -m sq_trt.hosttools.smoke` step in a fresh process; its PASS/FAIL lines
# go to stdout; a crash or a timeout is a FAIL line of its own.
run_step() {
  local name="$1"
  shift
  local status=0
  timeout "$STEP_TIMEOUT" "$PYTHON" -m sq_trt.hosttools.smoke "$@" || status=$?
  if [ "$status" -eq 124 ]; then
    echo "FAIL $name: timed out after ${STEP_TIMEOUT}s"
  fi
  if [ "$status" -ne 0 ]; then
    failures=$((failures + 1))
  fi
  return 0
}

case "$UNTIL" in
  all | export) ;;
  *)
    log "SQ_TRT_SMOKE_UNTIL must be 'all' or 'export', got '$UNTIL'"
    exit 2
    ;;
esac
[ -f pyproject.toml ] || { log "run from the sq-trt repository root (no pyproject.toml in $PWD)"; exit 2; }
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
WORK="$OUT/work"
ENGINES="$OUT/engines"
started=$SECONDS

if [ "$UNTIL" = "export" ]; then
  run_step env env --no-tensorrt-ok
else
  run_step env env
fi
run_step export export "$WORK"

if [ "$UNTIL" = "export" ]; then
  echo "STOP before the first TensorRT call (SQ_TRT_SMOKE_UNTIL=export)"
else
  run_step build build "$WORK" "$ENGINES"
  for encoding in per-tensor portable plugin; do
    plan="$ENGINES/smoke-$encoding/trt.plan"
    if [ ! -f "$plan" ]; then
      echo "FAIL $encoding: no engine to run ($plan)"
      failures=$((failures + 1))
      continue
    fi
    run_step "agree $encoding" agree "$plan" "$WORK/$encoding/model.int8.onnx"
    run_step "load $encoding" load "$plan"
  done
fi

log "$((SECONDS - started))s, $failures failed step(s); details above"
[ "$failures" -eq 0 ]
