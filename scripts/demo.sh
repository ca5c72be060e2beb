#!/usr/bin/env bash
# Set up (if needed) and run the main job on the embedded default (demo model + embedded text).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
sq-trt fetch-demo
sq-trt pipeline --recipe builders/smollm2-135m.yaml "$@"
