#!/usr/bin/env bash
# Create .venv and install sq-trt with the CPU extras. Idempotent.
# torch is pinned to 2.13.0: with nothing installed, a bare `torch` requirement
# pulls a multi-GB CUDA build; 2.13.0 resolves to the CPU build on these machines.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[rtx,kernels,serve,cluster,dev]"
