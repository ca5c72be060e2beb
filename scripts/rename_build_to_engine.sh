#!/usr/bin/env bash
# Rename the sq_trt.build package to sq_trt.engine (issue 12); rerunnable after merging other branches.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
if [ -d sq_trt/build ] && [ -d sq_trt/engine ]; then
  # A branch merged after the rename added or changed files under the old name: move them one by one.
  git ls-files sq_trt/build | while read -r f; do
    mkdir -p "$(dirname "sq_trt/engine/${f#sq_trt/build/}")"
    git mv -f "$f" "sq_trt/engine/${f#sq_trt/build/}"
  done
elif [ -d sq_trt/build ]; then
  git mv sq_trt/build sq_trt/engine
fi
(git ls-files -z -- . ':!scripts/rename_build_to_engine.sh' | xargs -0 grep -lZ 'sq_trt\.build\b\|sq_trt/build\b\|"sq_trt" / "build"' 2>/dev/null || true) \
  | xargs -0 -r sed -i -E 's/sq_trt\.build\b/sq_trt.engine/g; s#sq_trt/build\b#sq_trt/engine#g; s#"sq_trt" / "build"#"sq_trt" / "engine"#g'
