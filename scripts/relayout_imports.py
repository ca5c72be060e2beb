"""Rewrite the old top-level module paths of sq_trt/ to their packages (issue 26's layout commit).

The layout commit moved 17 modules with ``git mv`` (a later commit moved
``compare/results.py``); this script rewrites every import line and string that names an
old path (``sq_trt.calibrate`` -> ``sq_trt.calibrate.stage``,
``sq_trt/offload.py`` -> ``sq_trt/models/offload.py``, ``from sq_trt import smooth`` ->
``from sq_trt.smooth import stage as smooth``). Run it on the files a merge brings in from
a branch written against the old layout
(``python scripts/relayout_imports.py $(git diff --name-only LAYOUT_COMMIT MERGED_BRANCH)``),
then delete it once no such branch is left. It rewrites only old paths, and a second run
changes nothing, but a file written for the new layout that names the packages
``sq_trt.calibrate``, ``sq_trt.smooth`` or ``sq_trt.pipeline`` themselves would be taken for
the old modules: pass only old-layout files. ``sq_trt.artifacts`` keeps its name: the
package re-exports the manifest module's and the activation scales' public names.

Usage: ``python scripts/relayout_imports.py FILE ...`` (rewrites in place, prints each file changed).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

# old dotted path (under sq_trt.) -> new dotted path (under sq_trt.)
MOVES = {
    "artifact_types": "artifacts.act_scales",
    "calibrate": "calibrate.stage",
    "smooth": "smooth.stage",
    "smooth_config": "smooth.config",
    "autoalpha": "smooth.search",
    "offload": "models.offload",
    "evaluate": "runtime.perplexity",
    "export.runtime": "runtime.onnx",
    "export.fused_cpu": "runtime.fused_cpu",
    "pipeline": "pipeline.runner",
    "pipeline_context": "pipeline.context",
    "pipeline_stages": "pipeline.stages",
    "recipe": "pipeline.recipe",
    "gpu_kit": "hosttools.gpu_kit",
    "gpu_kit_kernels": "hosttools.gpu_kit_kernels",
    "smoke": "hosttools.smoke",
    "compare.results": "artifacts.comparison",
}
# Longest first, so that `smooth_config` is not read as `smooth`; the lookahead keeps a
# rewritten path (`sq_trt.smooth.stage`, `from sq_trt.smooth import stage as smooth`) from matching again.
_OLD = sorted(MOVES, key=len, reverse=True)
_NEW_LEAVES = "stage|config|search|runner|context|stages|recipe"
_DOTTED = re.compile(
    r"\bsq_trt\.(" + "|".join(map(re.escape, _OLD)) + r")\b(?!(?:\.| import )(?:" + _NEW_LEAVES + r")\b)"
)
_SLASHED = re.compile(
    r"\bsq_trt/(" + "|".join(re.escape(o.replace(".", "/")) for o in _OLD) + r"|artifacts)\.py\b"
)
_FROM_IMPORT = re.compile(
    r"^(\s*)from sq_trt import (" + "|".join(o for o in _OLD if "." not in o) + r")$", re.MULTILINE
)


def _dotted(match: re.Match[str]) -> str:
    return "sq_trt." + MOVES[match.group(1)]


def _slashed(match: re.Match[str]) -> str:
    old = match.group(1).replace("/", ".")
    new = "artifacts.manifest" if old == "artifacts" else MOVES[old]
    return "sq_trt/" + new.replace(".", "/") + ".py"


def _from_import(match: re.Match[str]) -> str:
    package, module = MOVES[match.group(2)].rsplit(".", 1)
    return f"{match.group(1)}from sq_trt.{package} import {module} as {match.group(2)}"


def rewrite(text: str) -> str:
    """``text`` with every old module path replaced by its new one."""
    text = _FROM_IMPORT.sub(_from_import, text)
    text = _DOTTED.sub(_dotted, text)
    return _SLASHED.sub(_slashed, text)


def main(argv: list[str]) -> int:
    """Rewrite the files in place; print each one changed."""
    if not argv:
        print("usage: python scripts/relayout_imports.py FILE ...", file=sys.stderr)
        return 2
    for path in (Path(a) for a in argv):
        text = path.read_text()
        new = rewrite(text)
        if new != text:
            path.write_text(new)
            print(f"rewrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
