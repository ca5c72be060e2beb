#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite, as CI does.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# System tools some tests use (headless Chromium renders the report; shellcheck lints the
# GPU-host kit). Installed when missing and we can (root); otherwise those tests skip.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=()
  command -v chromium >/dev/null || missing+=(chromium)
  command -v shellcheck >/dev/null || missing+=(shellcheck)
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
      || echo "warning: could not install ${missing[*]}; the tests that need them will skip" >&2
  fi
fi
. .venv/bin/activate
# Fetch the demo model once (cached in ~/.cache/sq-trt) for the integration tests.
sq-trt fetch-demo
# The TensorRT API check (tests/trt_api) must really run here, not skip.
export SQ_TRT_REQUIRE_TRT_API=1
# The report screenshot lands here (kept as a CI artifact).
export SQ_TRT_ARTIFACTS="${SQ_TRT_ARTIFACTS:-$PWD/build/ci-artifacts}"
# Disk: the venv (~3.1 GB), the demo cache (~0.8 GB) and the largest demo test (~1 GB at once)
# need ~5 GB. Say so up front: a full disk otherwise shows up as scattered OSErrors mid-run.
free_mb=$(df -Pm "${TMPDIR:-/tmp}" | awk 'NR==2 {print $4}')
echo "sq-trt tests: commit $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
echo "sq-trt tests: ${free_mb} MB free in ${TMPDIR:-/tmp} before the run"
# The CPU decides speeds (and float rounding): torch._int_mm is fast only with VNNI, so say what ran.
echo "sq-trt tests: CPU: $(grep -m1 '^model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | xargs), $(nproc) cores"
echo "sq-trt tests: CPU flags: $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | xargs)"
python -c "import torch; from sq_trt.quant.intgemm import gemm_path; \
print(f'sq-trt tests: torch CPU capability {torch.backends.cpu.get_cpu_capability()}, search int8 GEMM path {gemm_path()}')"
if [ "${free_mb}" -lt 1500 ]; then
  echo "warning: under 1.5 GB free; the demo-model tests write up to ~1 GB at a time and may fail with ENOSPC" >&2
fi
# Static checks first: cheaper than the suite, and a failure here names the line.
ruff check sq_trt plugins tests bench scripts
mypy sq_trt plugins
python scripts/check_imports.py
python scripts/check_function_length.py
# pytest exits 5 when it collects no test; `set -e` turns that into a failed run.
# Two workers (pytest-xdist), each pinned to its own core by tests/conftest.py (its torch and ONNX
# Runtime pools sized to that core); whole modules per worker, the demo-trace modules together
# (conftest.py's scheduler), handed out in conftest.py's order.
# SQ_TRT_TEST_WORKERS=0 runs in this process, in pytest's order.
workers="${SQ_TRT_TEST_WORKERS:-2}"
if [ "${workers}" -gt 0 ]; then
  python -m pytest -q -n "${workers}" --dist loadscope --no-loadscope-reorder --durations=25 "$@"
else
  python -m pytest -q --durations=25 "$@"
fi
