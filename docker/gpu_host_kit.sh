#!/usr/bin/env bash
# GPU-host kit: run inside NVIDIA's TensorRT container (nvcr.io/nvidia/tensorrt:<yy.mm>-py3) on a
# GPU host, from the repository root (or with the repository mounted at /workspace/sq-trt):
#
#   docker run --gpus all --rm -it -v "$PWD":/workspace/sq-trt -w /workspace/sq-trt \
#       nvcr.io/nvidia/tensorrt:25.10-py3 bash docker/gpu_host_kit.sh [RECIPE] [OUT]
#
# It (0) runs docker/smoke.sh (a three-minute PASS/FAIL check of the whole path on a tiny model),
# (1) runs the GPU tests (pytest -m gpu and tests/gpu), (2) runs the pipeline with TensorRT
# proper (FP16, per-tensor INT8 and per-token INT8 with the plugin), (3) decides per engine whether
# its GEMMs run INT8 from the kernel names it runs (inspector TacticName / trtexec --dumpLayerInfo)
# and whether the plugin's INT8 output feeds an INT8 GEMM, (4) times FP16 vs INT8 with trtexec at
# shapes inside each engine's optimization profiles, and (5) writes all of it, with the container
# release it ran in, into OUT/gpu_host.md (the pipeline's report plus GPU sections) and
# OUT/gpu_host.json. Exit code: the pipeline's (0 gate passed, 3 gate failed), or 1 when a step
# broke; a failing smoke check or GPU test is reported and makes the exit code 1 after everything
# is written.
#
# Environment knobs: SHAPES (BxS list; default: each engine's profile opt and max, from its
# manifest), TRTEXEC (path), SKIP_SMOKE=1, SKIP_TESTS=1, SKIP_INSTALL=1, PIP_EXTRA (extra pip args).
set -euo pipefail

RECIPE="${1:-builders/smollm2-135m.yaml}"
OUT="${2:-gpu-host-kit}"
SHAPES="${SHAPES:-}"
TRTEXEC="${TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}"

log() { printf '[gpu-kit] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ -f pyproject.toml ] || die "run from the sq-trt repository root (no pyproject.toml in $PWD)"
[ -f "$RECIPE" ] || die "recipe $RECIPE does not exist"
command -v nvidia-smi >/dev/null || die "nvidia-smi not found: run on a GPU host with 'docker run --gpus all'"
nvidia-smi -L >/dev/null || die "no GPU visible to this container (docker run --gpus all ...)"
mkdir -p "$OUT/timings"
OUT="$(cd "$OUT" && pwd)"

if [ "${SKIP_INSTALL:-0}" != "1" ]; then
  log "installing sq-trt with the trt, kernels and dev extras (TensorRT comes from the container)"
  # shellcheck disable=SC2086  # PIP_EXTRA is a list of arguments on purpose
  python -m pip install --quiet ${PIP_EXTRA:-} -e '.[trt,kernels,dev]'
fi
python -c 'import tensorrt, sys; sys.stderr.write(f"[gpu-kit] TensorRT {tensorrt.__version__}\n")' \
  || die "TensorRT's Python module is not importable; use NVIDIA's TensorRT container"

HOST="$(nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader | head -n 1)"
log "GPU: $HOST"
# The NVIDIA release this runs in (NVIDIA_TENSORRT_VERSION in the TensorRT container): recorded in every
# engine manifest, so export-triton pairs the engines with the tritonserver release of the same TensorRT.
RELEASE="$(python -c 'from sq_trt.engine.releases import container_release; print(container_release() or "")')"
export SQ_TRT_CONTAINER_RELEASE="$RELEASE"
log "container release: ${RELEASE:-unknown}"

# 0. Smoke checks first: minutes, and they say which part of the path breaks.
smoke_status=0
if [ "${SKIP_SMOKE:-0}" != "1" ]; then
  log "smoke checks (docker/smoke.sh)"
  bash docker/smoke.sh "$OUT/smoke" | tee "$OUT/smoke.log" || smoke_status=$?
fi

# 1. GPU tests: recorded, never fatal here, so the rest of the evidence is still produced.
tests_status=0
if [ "${SKIP_TESTS:-0}" != "1" ]; then
  log "running the GPU tests"
  python -m pytest -q -rs -m gpu tests/gpu --junitxml="$OUT/gpu-tests.xml" || tests_status=$?
  [ "$tests_status" -eq 5 ] && tests_status=0  # no test selected is not a failure of the kit
fi

# 2. The pipeline with TensorRT proper; engines keep the inspector's layer JSON (built on a GPU).
NAME="$(python -c 'import sys; from sq_trt.pipeline.recipe import load_recipe; print(load_recipe(sys.argv[1]).name)' "$RECIPE")"
ENGINES="$OUT/engines/$NAME"
log "pipeline $RECIPE (engines in $ENGINES)"
pipeline_status=0
sq-trt pipeline --recipe "$RECIPE" \
  --set build.backend=tensorrt --set compare.runner=tensorrt \
  --set "work_dir=$OUT/work/$NAME" --set "engines_dir=$ENGINES" || pipeline_status=$?
if [ "$pipeline_status" -ne 0 ] && [ "$pipeline_status" -ne 3 ]; then
  die "the pipeline failed (exit $pipeline_status); its messages are above"
fi

# 3 + 4. Per engine: the kernels it runs (layer info, detailed verbosity), then timings at shapes inside
# its profiles. The plugin is a Quickly Deployable Plugin with an ahead-of-time kernel embedded in the
# engine, so trtexec needs no plugin library.
[ -x "$TRTEXEC" ] || die "trtexec not found (set TRTEXEC=/path/to/trtexec)"
mkdir -p "$OUT/layers"
for plan in "$ENGINES"/*/*.plan; do
  [ -e "$plan" ] || continue
  engine="$(basename "$(dirname "$plan")")"
  target="$(basename "$plan" .plan)"
  "$TRTEXEC" --loadEngine="$plan" --profilingVerbosity=detailed --dumpLayerInfo --iterations=1 \
    --exportLayerInfo="$OUT/layers/${engine}__${target}.layers.json" >"$OUT/layers/${engine}__${target}.layers.log" 2>&1 \
    || log "trtexec could not list the layers of $engine/$target (see $OUT/layers)"
  engine_shapes="$SHAPES"
  if [ -z "$engine_shapes" ]; then
    engine_shapes="$(python -m sq_trt.hosttools.gpu_kit profile-shapes "$plan")" \
      || { log "no profiles recorded for $engine/$target; not timed"; continue; }
  fi
  for shape in $engine_shapes; do
    batch="${shape%x*}"
    seq="${shape#*x}"
    logfile="$OUT/timings/${engine}__${target}__b${batch}_s${seq}.log"
    if ! args="$(python -m sq_trt.hosttools.gpu_kit shapes "$plan" "$batch" "$seq")"; then
      log "skipping $engine/$target at ${batch}x${seq}: outside its profiles"
      continue
    fi
    log "timing $engine/$target at batch $batch x seq $seq"
    # shellcheck disable=SC2086  # $args is `--shapes=... --profile=N`, two arguments on purpose
    "$TRTEXEC" --loadEngine="$plan" $args \
      --warmUp=500 --duration=5 --useCudaGraph --noDataTransfers >"$logfile" 2>&1 \
      || log "trtexec failed for $engine/$target at ${batch}x${seq} (see $logfile)"
  done
done

# 5. One report: the pipeline's Markdown report + GPU tests, INT8 layers, plugin fusion, timings.
python -m sq_trt.hosttools.gpu_kit report --engines "$ENGINES" --out "$OUT" --timings "$OUT/timings" \
  --junit "$OUT/gpu-tests.xml" --pipeline-report "$OUT/work/$NAME/report/report.md" --host "$HOST" \
  --layer-info "$OUT/layers" --smoke "$OUT/smoke.log" --container-release "${RELEASE:-}"
log "report: $OUT/gpu_host.md (pipeline report: $OUT/work/$NAME/report/report.html)"

if [ "$smoke_status" -ne 0 ]; then
  log "smoke checks failed; see the FAIL lines in $OUT/smoke.log"
  exit 1
fi
if [ "$tests_status" -ne 0 ]; then
  log "GPU tests failed (exit $tests_status); see $OUT/gpu-tests.xml"
  exit 1
fi
exit "$pipeline_status"
