#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite, as CI does.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
# Fetch the demo model once (cached in ~/.cache/sq-trt) for the integration tests.
sq-trt fetch-demo
python -m pytest -q "$@"
