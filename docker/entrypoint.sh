#!/bin/sh
# Container entrypoint: `build-engine` (= `sq-trt build`) by default; `sq-trt <command> ...` runs any
# other stage (export, compare, export-triton...) in the same image.
set -e
if [ "$1" = "sq-trt" ]; then
    shift
    exec sq-trt "$@"
fi
exec build-engine "$@"
