#!/usr/bin/env bash
# Rename the sq_trt.build package to sq_trt.engine (issue 12); rerunnable after merging other branches.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
[ -d sq_trt/build ] && git mv sq_trt/build sq_trt/engine
git ls-files -z | xargs -0 grep -lZ 'sq_trt\.build\b\|sq_trt/build\b\|"sq_trt" / "build"' 2>/dev/null \
  | xargs -0 -r sed -i -E 's/sq_trt\.build\b/sq_trt.engine/g; s#sq_trt/build\b#sq_trt/engine#g; s#"sq_trt" / "build"#"sq_trt" / "engine"#g'
