#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite, as CI does.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
# Fetch the demo model once (cached in ~/.cache/sq-trt) for the integration tests.
sq-trt fetch-demo
# The TensorRT API check (tests/trt_api) must really run here, not skip.
export SQ_TRT_REQUIRE_TRT_API=1
python -m pytest -q "$@"
