"""The table of bad inputs: every subcommand, every artifact kind, every class of issue 17.

Classes (the ``cls`` of each case, counted in docs/RELIABILITY.md):

* ``manifest``: a corrupt, mistyped, escaping or tampered manifest or artifact file, per consumer;
* ``output``: an output path that cannot be written, per command;
* ``model``: a missing, corrupt or unsupported model, an absent device, a sequence too long;
* ``data``: a missing, binary, mistyped or forbidden text source, per command;
* ``recipe``: pipeline and build recipes and ``--set`` values;
* ``compare``: runner specs, ONNX files, gates, saved results;
* ``report``: forged verdicts, malformed comparison/layers/sweep files, mixed models;
* ``triton``: engine directories for ``export-triton``;
* ``concurrency``: an output another writer holds (issue 28), per command;
* ``bounds``: numeric flags outside their config's bounds or the model's positions (issue 28), refused first;
* ``overlap``: an --out inside (or holding) one of the command's inputs (issue 28);
* ``generate``: prompt files and graphs that ended in a traceback (issue 28);
* ``usage``: argparse usage errors (issue 28): one line, exit 1;
* ``verify``: inputs read without their manifest being checked, and the signing policy with the key set
  and unset (issue 28), per reader.
"""

from __future__ import annotations

import json
import shutil
import struct

from .harness import (
    Case,
    compose,
    copy,
    edit_file,
    edit_json,
    edit_manifest,
    locked_by_other_writer,
    random_bytes,
    remove,
    set_env,
    symlink,
    write,
)

TINY = ("--model", "tiny:llama", "--no-progress")
LLAMA_CONFIG = json.dumps(
    {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "num_hidden_layers": 1,
        "vocab_size": 256,
    }
)
TEXT = "The quick brown fox jumps over the lazy dog. " * 400


# --------------------------------------------------------------------------------- manifests, per consumer


def _set(key: str, value: object):  # type: ignore[no-untyped-def]
    def change(data: dict) -> None:  # type: ignore[type-arg]
        data[key] = value

    return change


# (id, setup on the copied artifact "x", message fragment)
_MANIFEST_CORRUPTIONS = [
    ("missing", remove("manifest.json"), "has no manifest.json"),
    ("not-json", edit_file("manifest.json", lambda b: b"{not json"), "not valid JSON"),
    ("empty", edit_file("manifest.json", lambda b: b""), "not valid JSON"),
    ("binary", edit_file("manifest.json", lambda b: random_bytes(300)), "not valid JSON"),
    ("list", edit_manifest(lambda d: []), "expected a JSON object"),
    ("schema-99", edit_manifest(_set("schema_version", 99)), "schema_version"),
    ("schema-true", edit_manifest(_set("schema_version", True)), "schema_version"),
    ("stage-other", edit_manifest(_set("stage", "other")), "expected an artifact of stage"),
    ("stage-int", edit_manifest(_set("stage", 5)), "field 'stage'"),
    ("files-string", edit_manifest(_set("files", "abc")), "field 'files'"),
    ("files-int-hash", edit_manifest(lambda d: d["files"].update({"a": 1})), "field 'files'"),
    ("files-escape", edit_manifest(lambda d: d["files"].update({"../../etc/hostname": "sha256:0"})), "outside"),
    ("files-absolute", edit_manifest(lambda d: d["files"].update({"/etc/hostname": "sha256:0"})), "outside"),
    ("files-dotdot-inner", edit_manifest(lambda d: d["files"].update({"a/../../x": "sha256:0"})), "outside"),
    ("unknown-field", edit_manifest(_set("evil", 1)), "unexpected fields"),
    ("extra-list", edit_manifest(_set("extra", [])), "field 'extra'"),
    ("config-string", edit_manifest(_set("config", "x")), "field 'config'"),
    ("inputs-nested", edit_manifest(_set("inputs", {"a": {"b": 1}})), "field 'inputs'"),
    ("created-string", edit_manifest(_set("created_unix", "yesterday")), "field 'created_unix'"),
    ("deep-nesting", edit_file("manifest.json", lambda b: b"[" * 100000), "not valid JSON"),
]


def _main_file_corruptions(main: str, parse_fragment: str) -> list[tuple[str, object, str]]:
    return [
        ("file-tampered", edit_file(main, lambda b: b + b"\x00"), "has changed since the manifest"),
        ("file-missing", remove(main), "missing"),
        ("file-truncated-rehashed", edit_file(main, lambda b: b[: len(b) // 3], rehash=True), parse_fragment),
        ("file-garbage-rehashed", edit_file(main, lambda b: random_bytes(200, 1), rehash=True), parse_fragment),
    ]


def _nan_scales(value: float):  # type: ignore[no-untyped-def]
    def change(data: bytes) -> bytes:
        # Every float32 of the safetensors body (after the JSON header) set to ``value``.
        (header,) = struct.unpack("<Q", data[:8])
        body = data[8 + header :]
        return data[: 8 + header] + struct.pack("<f", value) * (len(body) // 4)

    return change


_CONSUMERS = {
    # name: (artifact kind in Env.shared, argv with {case}/x as the artifact, main file, parse fragment)
    "smooth<-act_scales": (
        "scales",
        ("smooth", *TINY, "--act-scales", "{case}/x", "--out", "{out}"),
        "act_scales.safetensors",
        "not a readable safetensors",
    ),
    "export<-act_scales": (
        "scales",
        ("export", "--model", "tiny:llama", "--act-scales", "{case}/x", "--act-mode", "per-tensor", "--out", "{out}"),
        "act_scales.safetensors",
        "not a readable safetensors",
    ),
    "report<-calibration": (
        "scales",
        ("report", "--results", "{compare}", "--calibration", "{case}/x", "--smoothed", "{smoothed}", "--out", "{out}"),
        "act_scales.safetensors",
        "not a readable safetensors",
    ),
    "export<-smoothed": (
        "smoothed",
        ("export", "--smoothed", "{case}/x", "--out", "{out}"),
        "act_scales.safetensors",
        "not a readable safetensors",
    ),
    "report<-smoothed": (
        "smoothed",
        ("report", "--results", "{compare}", "--calibration", "{scales}", "--smoothed", "{case}/x", "--out", "{out}"),
        "act_scales.safetensors",
        "not a readable safetensors",
    ),
    "report<-compare": (
        "compare",
        ("report", "--results", "{case}/x", "--out", "{out}"),
        "comparison.json",
        "not valid JSON",
    ),
    "replay<-compare": (
        "compare",
        ("compare", "--load-results", "{case}/x", "--out", "{out}", "--no-progress"),
        "comparison.json",
        "not valid JSON",
    ),
}


def manifest_cases() -> list[Case]:
    """Every manifest corruption and main-file corruption, for every consumer of every artifact kind."""
    cases = []
    for consumer, (kind, argv, main, parse_fragment) in _CONSUMERS.items():
        corruptions = _MANIFEST_CORRUPTIONS + _main_file_corruptions(main, parse_fragment)
        if main == "act_scales.safetensors":
            corruptions += [
                ("nan-rehashed", edit_file(main, _nan_scales(float("nan")), rehash=True), "non-finite"),
                ("inf-rehashed", edit_file(main, _nan_scales(float("inf")), rehash=True), "non-finite"),
                ("negative-rehashed", edit_file(main, _nan_scales(-2.0), rehash=True), "negative"),
            ]
        for name, setup, fragment in corruptions:
            cases.append(Case(f"{consumer}-{name}", "manifest", argv, fragment, compose(copy(kind), setup)))  # type: ignore[arg-type]
    return cases


# --------------------------------------------------------------------------------------- output paths

_COMMANDS_WITH_OUT = {
    "calibrate": ("calibrate", *TINY, "--out"),
    "smooth": ("smooth", *TINY, "--act-scales", "{scales}", "--out"),
    "export": ("export", "--smoothed", "{smoothed}", "--out"),
    "compare": ("compare", "--baseline", "torch:tiny:llama", "--candidate", "c=torch:tiny:llama", *TINY, "--out"),
    "report": ("report", "--results", "{compare}", "--out"),
    "pipeline": ("pipeline", "--recipe", "{recipe}", "--quiet", "--out"),
}
_BAD_OUTS = [
    ("parent-is-file", write("file", "x"), "{case}/file/out", "is a file"),
    ("ancestor-is-file", write("file", "x"), "{case}/file/a/b/out", "is a file"),
    ("name-too-long", None, "{case}/" + "n" * 256, "255 bytes"),
    ("dir-name-too-long", None, "{case}/" + "d" * 300 + "/out", "255 bytes"),
    ("exists-no-force", write("out/keep", "x"), "{out}", "already exists"),
]


def output_cases() -> list[Case]:
    """Unwritable outputs for every command that writes one, refused before any work."""
    cases = []
    for command, prefix in _COMMANDS_WITH_OUT.items():
        for name, setup, out, fragment in _BAD_OUTS:
            if command == "pipeline" and name == "exists-no-force":
                continue  # the pipeline reuses its work dir by design
            cases.append(Case(f"{command}-{name}", "output", (*prefix, out), fragment, setup))
        if command != "pipeline":
            cases.append(
                Case(f"{command}-file-with-force", "output", (*prefix, "{out}", "--force"), "existing file", write("out", "x"))
            )
    return cases


# ------------------------------------------------------------------------------------------------ models

_GGUF_HEADER = b"GGUF" + struct.pack("<I", 3) + struct.pack("<Q", 5) + struct.pack("<Q", 9)
_BAD_MODELS = [
    ("missing-path", None, "{case}/nothing", "does not exist"),
    ("dir-without-config", write("m/readme.txt", "hi"), "{case}/m", "no config.json"),
    ("config-binary", write("m/config.json", random_bytes(100, 2)), "{case}/m", "could not load the config"),
    ("config-list", write("m/config.json", "[1, 2]"), "{case}/m", "could not load the config"),
    ("unsupported-arch", write("m/config.json", json.dumps({"model_type": "resnet"})), "{case}/m", "resnet"),
    (
        "safetensors-corrupt-header",
        compose(write("m/config.json", LLAMA_CONFIG), write("m/model.safetensors", b"\xff" * 64)),
        "{case}/m",
        "could not load model",
    ),
    (
        "safetensors-huge-header-length",
        compose(write("m/config.json", LLAMA_CONFIG), write("m/model.safetensors", struct.pack("<Q", 2**60) + b"{}")),
        "{case}/m",
        "could not load model",
    ),
    (
        "pickle-bin",
        compose(write("m/config.json", LLAMA_CONFIG), write("m/pytorch_model.bin", b"\x80\x04cos\nsystem\n.")),
        "{case}/m",
        "could not load model",
    ),
    ("gguf-truncated", write("m.gguf", _GGUF_HEADER), "{case}/m.gguf", "could not load"),
    ("gguf-random", write("r.gguf", random_bytes(512, 3)), "{case}/r.gguf", "could not load"),
    ("not-gguf-file", write("m.txt", "x"), "{case}/m.txt", "not a .gguf"),
    ("tiny-unknown-family", None, "tiny:resnet", "no tiny model"),
]
_BAD_DEVICES = [
    ("device-bogus", "bogus", "not a torch device"),
    ("device-empty", "", "not a torch device"),
    ("device-cuda-absent", "cuda", "cuda"),
    ("device-cuda-index", "cuda:7", "cuda:7"),
]


def model_cases() -> list[Case]:
    """Bad --model and --device values for the commands that load a model."""
    cases = []
    for command in ("calibrate", "eval"):
        for name, setup, model, fragment in _BAD_MODELS:
            argv = (command, "--model", model, *(("--out", "{out}") if command == "calibrate" else ()))
            cases.append(Case(f"{command}-{name}", "model", argv, fragment, setup))
        for name, device, fragment in _BAD_DEVICES:
            argv = (command, "--model", "tiny:llama", "--device", device)
            cases.append(Case(f"{command}-{name}", "model", (*argv, *(("--out", "{out}") if command == "calibrate" else ())), fragment))
        argv = (command, "--model", "tiny:llama", "--seq-len", "4096", *(("--out", "{out}") if command == "calibrate" else ()))
        cases.append(Case(f"{command}-seq-len-past-positions", "model", argv, "max_position_embeddings"))
    for name, setup, model, fragment in _BAD_MODELS[:6]:
        argv = ("export", "--model", model, "--out", "{out}")
        cases.append(Case(f"export-{name}", "model", argv, fragment, setup))
    cases.append(
        Case("smooth-other-model", "model", ("smooth", "--model", "tiny:qwen2", "--act-scales", "{scales}", "--out", "{out}"), "calibrated on model")
    )
    cases.append(Case("smooth-device-bogus", "model", ("smooth", *TINY, "--act-scales", "{scales}", "--device", "nope", "--out", "{out}"), "not a torch device"))
    return cases


# -------------------------------------------------------------------------------------------------- data

_BAD_DATA = [
    ("missing-file", None, "{case}/none.txt", "not a file"),
    ("unsupported-suffix", write("d.csv", "text\nhello\n"), "{case}/d.csv", "suffix"),
    ("binary-txt", write("d.txt", b"\xff\xfe\x00\x81" * 100), "{case}/d.txt", "not UTF-8"),
    ("nul-txt", write("d.txt", "abc\x00def" * 100), "{case}/d.txt", "NUL"),
    ("empty-txt", write("d.txt", ""), "{case}/d.txt", "empty"),
    ("whitespace-txt", write("d.txt", "   \n\n  \n"), "{case}/d.txt", "empty"),
    ("too-short", write("d.txt", "tiny text only."), "{case}/d.txt", "shorter --seq-len"),
    ("jsonl-numbers", write("d.jsonl", "\n".join(json.dumps({"text": i}) for i in range(1, 99))), "{case}/d.jsonl", "holds a int"),
    ("jsonl-lists", write("d.jsonl", "\n".join(json.dumps({"text": ["a", i]}) for i in range(1, 99))), "{case}/d.jsonl", "holds a list"),
    ("jsonl-no-column", write("d.jsonl", json.dumps({"body": TEXT})), "{case}/d.jsonl", "no column 'text'"),
    ("jsonl-broken", write("d.jsonl", '{"text": "a"\n{{{'), "{case}/d.jsonl", "could not read"),
    ("parquet-garbage", write("d.parquet", random_bytes(256, 4)), "{case}/d.parquet", "could not read"),
    ("hub-local-files-only", None, "hub:wikitext:wikitext-2-raw-v1", "--local-files-only"),
]


def data_cases() -> list[Case]:
    """Bad --data values for every command that reads text."""
    commands = {
        "calibrate": ("calibrate", *TINY, "--local-files-only", "--seq-len", "64", "--out", "{out}", "--data"),
        "eval": ("eval", "--model", "tiny:llama", "--local-files-only", "--seq-len", "64", "--data"),
        "compare": (
            *("compare", "--baseline", "torch:tiny:llama", "--candidate", "c=torch:tiny:llama", *TINY),
            *("--local-files-only", "--seq-len", "64", "--out", "{out}", "--data"),
        ),
    }
    return [
        Case(f"{command}-{name}", "data", (*prefix, data), fragment, setup)
        for command, prefix in commands.items()
        for name, setup, data, fragment in _BAD_DATA
    ]


# ------------------------------------------------------------------------------------------------ recipes

_BOMB = "\n".join(
    ["kind: pipeline", 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"a{i}: &a{i} [{','.join(['*a' + str(i - 1)] * 9)}]" for i in range(1, 9)]
    + ["model: {source: *a8}"]
)
_BAD_PIPELINE_RECIPES = [
    ("missing", None, "does not exist"),
    ("alias-bomb", _BOMB, "aliases"),
    ("recursive-alias", "kind: pipeline\nmodel: &m {source: *m}\n", "YAML"),
    ("binary", random_bytes(400, 5), "not UTF-8"),
    ("nul", "kind: pipeline\x00\n", "NUL"),
    ("huge", "kind: pipeline\n#" + "x" * (1 << 20) + "\n", "KiB"),
    ("deep", "kind: pipeline\nx: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ("invalid-yaml", "kind: pipeline\nmodel: [unclosed\n", "not valid YAML"),
    ("python-tag", "kind: pipeline\nmodel: !!python/object/apply:os.system ['true']\n", "not valid YAML"),
    ("list", "- a\n- b\n", "holds a list"),
    ("scalar", "just text\n", "holds a str"),
    ("no-kind", "model: {source: tiny:llama}\n", "kind"),
    ("build-kind", "kind: build\n", "kind"),
    ("unknown-field", "kind: pipeline\nname: t\nmodel: {source: tiny:llama}\nmodle: 1\n", "unknown field"),
    ("bad-alpha", "kind: pipeline\nname: t\nmodel: {source: tiny:llama}\nsmooth: {alpha: 2.0}\n", "smooth.alpha"),
    ("negative-samples", "kind: pipeline\nname: t\nmodel: {source: tiny:llama}\ncalibrate: {samples: -1}\n", "calibrate.samples"),
    ("huge-list-value", "kind: pipeline\nname: t\nmodel: {source: tiny:llama}\ncalibrate: {samples: [" + "1," * 5000 + "1]}\n", "calibrate.samples"),
    ("model-missing", "kind: pipeline\nname: t\n", "model"),
    # Duplicate keys (issue 28): YAML keeps the last silently; a lax second gate replaced a strict one.
    ("duplicate-gate", "kind: pipeline\nname: t\nmodel: {source: tiny:llama}\ngate: [kl_mean<=0]\ngate: [kl_mean<=100]\n", "lines 4 and 5"),
    ("duplicate-top", "kind: pipeline\nname: t\nname: u\nmodel: {source: tiny:llama}\n", "lines 2 and 3"),
    ("duplicate-nested", "kind: pipeline\nname: t\nmodel:\n  source: tiny:llama\n  dtype: float32\n  source: demo\n", "lines 4 and 6"),
    ("duplicate-flow", "kind: pipeline\nname: t\nmodel: {source: tiny:llama, source: demo}\n", "'source' appears twice"),
    ("duplicate-in-list", "kind: pipeline\nname: t\nmodel: {source: tiny:llama}\nexport:\n  candidates:\n  - {name: a, name: b}\n", "'name' appears twice"),
]
# The same bomb as one flow sequence (no braces: case arguments go through str.format).
_BOMB_VALUE = "[&a0 [" + ",".join(["lol"] * 9) + "], " + ", ".join(
    f"&a{i} [{','.join(['*a' + str(i - 1)] * 9)}]" for i in range(1, 9)
) + "]"
_GOOD_RECIPE = "kind: pipeline\nname: t\nmodel: {source: tiny:llama}\ngate: [kl_mean<=1]\n"
_BAD_SETS = [
    ("no-equals", "smooth.alpha", "not of the form"),
    ("empty-path", "=1", "not of the form"),
    ("empty-part", "smooth..alpha=1", "empty name"),
    ("into-scalar", "name.x=1", "not a section"),
    ("index-past-end", "gate.5=x", "past the end"),
    ("invalid-yaml", "smooth.alpha=[1", "not valid YAML"),
    ("alias-bomb-value", "name=" + _BOMB_VALUE, "aliases"),
    ("wrong-type", "calibrate.samples=abc", "calibrate.samples"),
    ("seq-len-past-positions", "calibrate.seq_len=4096", "max_position_embeddings"),
    ("device-bogus", "model.device=bogus", "not a torch device"),
    ("hub-offline", "data.source=hub:x", "--local-files-only"),
    ("override-typo", "smooth.overrides={{layers.*.mlp_typo: 0.7}}", "matches no smoothing group"),
]


def recipe_cases() -> list[Case]:
    """Pipeline and build recipes, and --set values."""
    cases = []
    for name, text, fragment in _BAD_PIPELINE_RECIPES:
        setup = write("r.yaml", text) if text is not None else None
        cases.append(Case(f"pipeline-{name}", "recipe", ("pipeline", "--recipe", "{case}/r.yaml", "--quiet"), fragment, setup))
    good = compose(write("r.yaml", _GOOD_RECIPE), write("file", "x"))
    for name, override, fragment in _BAD_SETS:
        extra = ("--set", "model.local_files_only=true") if name == "hub-offline" else ()
        argv = ("pipeline", "--recipe", "{case}/r.yaml", "--quiet", "--out", "{case}/work", *extra, "--set", override)
        cases.append(Case(f"set-{name}", "recipe", argv, fragment, good))
    cases.append(
        Case("pipeline-work-dir-under-file", "recipe", ("pipeline", "--recipe", "{case}/r.yaml", "--quiet", "--out", "{case}/file/w"), "is a file", good)
    )
    build = ("build", "--recipe", "{case}/b.yaml")
    for name, text, fragment, flags in [
        ("missing", None, "does not exist", ()),
        ("pipeline-kind", "kind: pipeline\n", "pipeline recipe", ()),
        ("profiles-string", 'profiles: "abc"\n', "profiles", ("--seq", "1,8,16")),
        ("profiles-string-no-flags", 'profiles: "abc"\nonnx: x.onnx\n', "profiles", ()),
        ("profiles-list-of-ints", "profiles: [1, 2]\n", "profiles", ("--batch", "1,1,2")),
        ("unknown-field", "onnx: x.onnx\nworkspce_mb: 1\n", "workspce_mb", ()),
        ("alias-bomb", _BOMB.replace("kind: pipeline", "name: x"), "aliases", ()),
        ("binary", random_bytes(300, 6), "not UTF-8", ()),
        ("list", "- 1\n", "holds a list", ()),
        ("python-tag", "onnx: !!python/name:os.system\n", "not valid YAML", ()),
        ("duplicate-key", "onnx: a.onnx\nname: n\nonnx: b.onnx\n", "lines 1 and 3", ()),
        ("duplicate-nested-key", "onnx: a.onnx\ngeneration: {max_batch: 1, max_batch: 64}\n", "'max_batch' appears twice", ()),
    ]:
        setup = write("b.yaml", text) if text is not None else None
        cases.append(Case(f"build-recipe-{name}", "recipe", (*build, *flags), fragment, setup))
    return cases


# ------------------------------------------------------------------------------------- compare and build inputs


def _onnx_variants() -> list[tuple[str, object, str]]:
    return [
        ("onnx-random", write("m.onnx", random_bytes(1000, 7)), "re-export it"),
        ("onnx-empty-file", write("m.onnx", b""), "re-export it"),
        ("onnx-truncated", lambda env: (env.case / "m.onnx").write_bytes(env.shared["onnx"].read_bytes()[:50]), "re-export it"),
        ("onnx-text", write("m.onnx", "hello world\n" * 10), "re-export it"),
    ]


def compare_cases() -> list[Case]:
    """Runner specs, ONNX files, gates and saved results of ``compare``; ONNX inputs of ``build``."""
    base = ("compare", *TINY, "--seq-len", "16", "--samples", "1", "--out", "{out}")
    cases = []
    for name, setup, fragment in _onnx_variants():
        cases.append(Case(f"compare-{name}", "compare", (*base, "--baseline", "{case}/m.onnx", "--candidate", "c=torch:tiny:llama"), fragment, setup))  # type: ignore[arg-type]
        cases.append(Case(f"build-{name}", "compare", (*_BUILD, "--onnx", "{case}/m.onnx"), fragment, setup))  # type: ignore[arg-type]
    tampered = compose(copy("export", "ex"), edit_file("model.onnx", _flip_last_byte, name="ex"))
    cases.append(Case("compare-onnx-tampered", "compare", (*base, "--baseline", "{case}/ex/model.onnx", "--candidate", "c=torch:tiny:llama"), "has changed", tampered))
    cases.append(Case("build-onnx-tampered", "compare", (*_BUILD, "--onnx", "{case}/ex/model.onnx"), "has changed", tampered))
    foreign = compose(copy("export", "ex"), lambda env: (env.case / "ex" / "other.onnx").write_bytes(env.shared["onnx"].read_bytes()))
    cases.append(Case("build-onnx-not-in-manifest", "compare", (*_BUILD, "--onnx", "{case}/ex/other.onnx"), "not listed", foreign))
    cases.append(Case("build-onnx-missing", "compare", (*_BUILD, "--onnx", "{case}/none.onnx"), "does not exist"))
    for name, flags, fragment in [
        ("no-baseline", ("--candidate", "c=torch:tiny:llama"), "--baseline"),
        ("no-candidate", ("--baseline", "torch:tiny:llama"), "--candidate"),
        ("candidate-without-name", ("--baseline", "torch:tiny:llama", "--candidate", "torch:tiny:llama"), "NAME="),
        ("candidate-missing-file", ("--baseline", "torch:tiny:llama", "--candidate", "c={case}/none.onnx"), "does not exist"),
        ("duplicate-names", ("--baseline", "c=torch:tiny:llama", "--candidate", "c=torch:tiny:llama"), "unique"),
        ("gate-unknown-metric", ("--baseline", "torch:tiny:llama", "--candidate", "c=torch:tiny:llama", "--gate", "speed>=1"), "known metrics"),
        ("gate-nan", ("--baseline", "torch:tiny:llama", "--candidate", "c=torch:tiny:llama", "--gate", "kl_mean<=nan"), "finite"),
        ("gate-garbage", ("--baseline", "torch:tiny:llama", "--candidate", "c=torch:tiny:llama", "--gate", "%%%"), "not of the form"),
        ("gate-unknown-candidate", ("--baseline", "torch:tiny:llama", "--candidate", "c=torch:tiny:llama", "--gate", "zz:kl_mean<=1"), "zz"),
        ("save-iterations", ("--baseline", "torch:tiny:llama", "--candidate", "c=torch:tiny:llama", "--save-iterations", "-5"), "--save-iterations"),
        ("load-results-missing", ("--load-results", "{case}/none"), "does not exist"),
        ("load-results-wrong-stage", ("--load-results", "{scales}"), "expected an artifact of stage"),
        ("per-tensor-without-scales", ("--baseline", "torch:tiny:llama", "--candidate", "c=torch-w8a8-per-tensor:tiny:llama"), "calibrated ranges"),
    ]:
        cases.append(Case(f"compare-{name}", "compare", (*base, *flags), fragment))
    added = compose(copy("compare"), lambda env: (env.case / "x" / "iterations" / "0000000077.json").write_text("{}"))
    cases.append(Case("replay-unlisted-iteration", "compare", ("compare", "--load-results", "{case}/x", "--out", "{out}", "--no-progress"), "not listed", added))
    swapped = compose(copy("compare"), edit_file(_first_iteration, lambda b: b + b" "))
    cases.append(Case("replay-edited-iteration", "compare", ("compare", "--load-results", "{case}/x", "--out", "{out}", "--no-progress"), "has changed", swapped))
    return cases


_first_iteration = "iterations/0000000000.json"
_BUILD = ("build", "--name", "n", "--target", "t", "--engines-dir", "{case}/e")


def _flip_last_byte(data: bytes) -> bytes:
    # The last field of a serialized ModelProto is the opset version: the file stays a loadable model.
    return data[:-1] + bytes([data[-1] ^ 0x01])


# -------------------------------------------------------------------------------------------------- report


def _improve_metrics(data: dict) -> None:  # type: ignore[type-arg]
    for metrics in data["metrics"].values():
        metrics["summary"]["kl_mean"] = 0.0


def _summary_string(data: dict) -> None:  # type: ignore[type-arg]
    for metrics in data["metrics"].values():
        metrics["summary"] = "x"


def _drop_data(data: dict) -> None:  # type: ignore[type-arg]
    del data["data"]


def _flip(data: dict) -> None:  # type: ignore[type-arg]
    data["gate"]["passed"] = not data["gate"]["passed"]


def report_cases() -> list[Case]:
    """Forged verdicts and malformed inputs of ``report``."""
    argv = ("report", "--results", "{case}/x", "--out", "{out}")
    cases = [
        Case("verdict-flipped", "report", argv, "has changed", compose(copy("compare"), edit_file("comparison.json", lambda b: b.replace(b'"passed": false', b'"passed": true', 1)))),
        Case("verdict-flipped-rehashed", "report", argv, "the file was edited", compose(copy("compare"), edit_json("comparison.json", _flip))),
        Case("conditions-emptied-rehashed", "report", argv, "the file was edited", compose(copy("compare"), edit_json("comparison.json", lambda d: d.update(gate_conditions=[])))),
        Case("metric-improved-rehashed", "report", argv, "the file was edited", compose(copy("compare"), edit_json("comparison.json", _improve_metrics))),
        Case("summary-string-rehashed", "report", argv, "summary", compose(copy("compare"), edit_json("comparison.json", _summary_string))),
        Case("candidates-dict-rehashed", "report", argv, "'candidates'", compose(copy("compare"), edit_json("comparison.json", lambda d: d.update(candidates={"a": 1})))),
        Case("metrics-list-rehashed", "report", argv, "'metrics'", compose(copy("compare"), edit_json("comparison.json", lambda d: d.update(metrics=[])))),
        Case("conditions-not-strings-rehashed", "report", argv, "gate_conditions", compose(copy("compare"), edit_json("comparison.json", lambda d: d.update(gate_conditions=[1, 2])))),
        Case("conditions-garbage-rehashed", "report", argv, "malformed", compose(copy("compare"), edit_json("comparison.json", lambda d: d.update(gate_conditions=["%%"])))),
        Case("schema-other-rehashed", "report", argv, "expected 'sq-trt.comparison/1'", compose(copy("compare"), edit_json("comparison.json", lambda d: d.update(schema="x")))),
        Case("field-missing-rehashed", "report", argv, "lacks the field", compose(copy("compare"), edit_json("comparison.json", _drop_data))),
        Case("layers-added", "report", argv, "not listed", compose(copy("compare"), write("x/layers.json", "{}"))),
    ]
    base = ("report", "--results", "{compare}", "--out", "{out}")
    for name, text, fragment in [
        ("sweep-missing", None, "does not exist"),
        ("sweep-not-json", "{", "not valid JSON"),
        ("sweep-binary", random_bytes(100, 8), "sweep file"),
        ("sweep-empty-points", '{"points": []}', "expected"),
        ("sweep-point-not-object", '{"points": [1, 2]}', "every point"),
        ("sweep-point-no-metric", '{"points": [{"alpha": 0.5}]}', "every point"),
        ("sweep-scalar", "3", "expected"),
    ]:
        setup = write("s.json", text) if text is not None else None
        cases.append(Case(name, "report", (*base, "--sweep", "{case}/s.json"), fragment, setup))
    cases += [
        Case("calibration-alone", "report", (*base, "--calibration", "{scales}"), "go together"),
        Case("act-layer-unknown", "report", (*base, "--calibration", "{scales}", "--smoothed", "{smoothed}", "--act-layer", "nope"), "no statistics"),
        Case("two-models", "report", (*base, "--calibration", "{other_scales}", "--smoothed", "{smoothed}"), "different models"),
        Case("smoothed-is-calibration", "report", (*base, "--calibration", "{scales}", "--smoothed", "{scales}"), "expected an artifact of stage"),
    ]
    return cases


def triton_cases() -> list[Case]:
    """``export-triton`` on engine directories that are not one."""
    argv = ("export-triton", "--engine-dir", "{case}/x", "--target", "rtx", "--repo", "{case}/repo", "--name", "m")
    return [
        Case("engine-dir-missing", "triton", argv, "does not exist"),
        Case("engine-dir-calibration", "triton", argv, "expected an artifact of stage", copy("scales")),
        Case("engine-dir-manifest-binary", "triton", argv, "not valid JSON", compose(copy("scales"), edit_file("manifest.json", lambda b: random_bytes(50, 9)))),
        Case("engine-dir-escape", "triton", argv, "outside", compose(copy("scales"), edit_manifest(lambda d: d["files"].update({"../x": "sha256:0"})))),
        Case("engines-not-object", "triton", argv, "'engines'", compose(copy("scales"), edit_manifest(_as_build_with("abc")))),
        Case("engines-target-missing", "triton", argv, "no engine for target", compose(copy("scales"), edit_manifest(_as_build_with({})))),
    ]


def _as_build_with(engines: object):  # type: ignore[no-untyped-def]
    def change(data: dict) -> None:  # type: ignore[type-arg]
        data["stage"] = "build"
        data["extra"] = {"engines": engines}

    return change


_BUSY = "is being written by another sq-trt process (pid 424242)"


def concurrency_cases() -> list[Case]:
    """Every command whose output (or work dir, engine dir, Triton model) another writer holds the lock of."""
    cases = []
    for command, prefix in _COMMANDS_WITH_OUT.items():
        lock = locked_by_other_writer("out")
        cases.append(Case(f"{command}-out-locked", "concurrency", (*prefix, "{out}"), _BUSY, lock))
        cases.append(Case(f"{command}-out-locked-force", "concurrency", (*prefix, "{out}", "--force"), _BUSY, lock))
    pipeline = _COMMANDS_WITH_OUT["pipeline"]
    cases.append(
        Case("pipeline-engines-locked", "concurrency", (*pipeline, "{out}"), _BUSY, locked_by_other_writer("out/engines"))
    )
    cases.append(Case("build-engine-dir-locked", "concurrency", (*_BUILD, "--onnx", "{onnx}"), _BUSY, locked_by_other_writer("e/n")))
    cases.append(Case("build-engine-dir-locked-force", "concurrency", (*_BUILD, "--onnx", "{onnx}", "--force"), _BUSY, locked_by_other_writer("e/n")))
    triton = ("export-triton", "--engine-dir", "{case}/x", "--target", "rtx", "--repo", "{case}/repo", "--name", "m")
    cases.append(Case("triton-model-locked", "concurrency", triton, _BUSY, compose(copy("scales"), locked_by_other_writer("repo/m"))))
    return cases


_KEY = set_env("SQ_TRT_MANIFEST_KEY", "k1")
_GEN = ("generate", "--prompt", "hi", "--max-new-tokens", "1", "--max-context", "16", "--tokenizer", "tiny:llama")
_CMP = ("compare", *TINY, "--seq-len", "16", "--samples", "1", "--out", "{out}", "--baseline", "torch:tiny:llama")
# Every reader of a model source that may be an sq-trt artifact directory (--model DIR, torch:DIR).
_MODEL_READERS = {
    "generate-model": (*_GEN, "--model", "{case}/x"),
    "compare-torch": (*_CMP, "--candidate", "c=torch:{case}/x"),
    "compare-torch-w8a8": (*_CMP, "--candidate", "c=torch-w8a8:{case}/x"),
    "calibrate-model": ("calibrate", "--model", "{case}/x", "--no-progress", "--out", "{out}"),
    "eval-model": ("eval", "--model", "{case}/x"),
    "export-model": ("export", "--model", "{case}/x", "--out", "{out}"),
}
# Every reader of an ONNX file inside an export artifact.
_ONNX_READERS = {
    "generate-onnx": (*_GEN, "--onnx", "{case}/ex/model.onnx"),
    "compare-onnx": (*_CMP, "--candidate", "c={case}/ex/model.onnx"),
    "build-onnx": (*_BUILD, "--onnx", "{case}/ex/model.onnx"),
}
_UNSIGNED = "is not in a signed sq-trt artifact"


def _model_dir_variants() -> list[tuple[str, object, str]]:
    weights = "model.safetensors"
    return [
        ("weights-tampered", compose(copy("smoothed"), edit_file(weights, lambda b: b[:-4] + b"\x00\x00\x80\x7f")), "has changed"),
        ("weights-symlinked", compose(copy("smoothed"), remove(weights), symlink(f"x/{weights}", "{smoothed}/" + weights)), "missing"),
        ("manifest-removed-key-set", compose(copy("smoothed"), remove("manifest.json"), _KEY), "no manifest.json"),
        ("signed-key-unset", compose(copy("smoothed"), write("x/manifest.sig", "hmac-sha256:00\n")), "is signed"),
    ]


def _onnx_variants_signed() -> list[tuple[str, object, str]]:
    tampered = edit_file("model.onnx", _flip_last_byte, name="ex")
    return [
        ("tampered", compose(copy("export", "ex"), tampered), "has changed"),
        ("manifest-removed-key-set", compose(copy("export", "ex"), remove("manifest.json", "ex"), tampered, _KEY), _UNSIGNED),
        ("lone-signature", compose(copy("export", "ex"), remove("manifest.json", "ex"), write("ex/manifest.sig", "x")), "manifest was removed"),
        ("signed-key-unset", compose(copy("export", "ex"), write("ex/manifest.sig", "hmac-sha256:00\n")), "is signed"),
        ("symlinked", compose(copy("export", "ex"), remove("model.onnx", "ex"), symlink("ex/model.onnx", "{onnx}")), "missing"),
        ("foreign-key-set", compose(write("ex/model.onnx", b""), lambda env: (env.case / "ex" / "model.onnx").write_bytes(env.shared["onnx"].read_bytes()), _KEY), _UNSIGNED),
    ]


def verify_cases() -> list[Case]:
    """Every artifact reader verifies the same way: tampering, symlinks, removed manifests, the signing policy."""
    cases = []
    for reader, argv in _MODEL_READERS.items():
        for name, setup, fragment in _model_dir_variants():
            cases.append(Case(f"{reader}-{name}", "verify", argv, fragment, setup))  # type: ignore[arg-type]
    for reader, argv in _ONNX_READERS.items():
        for name, setup, fragment in _onnx_variants_signed():
            cases.append(Case(f"{reader}-{name}", "verify", argv, fragment, setup))  # type: ignore[arg-type]
    tok = compose(copy("export_tok", "ex"))
    for name, setup, fragment in [
        ("tokenizer-file-added", compose(tok, write("ex/tokenizer/extra.json", "{}")), "not listed"),
        ("tokenizer-file-edited", compose(tok, write("ex/tokenizer/tokenizer.json", "{}")), "has changed"),
        ("tokenizer-symlink-out", compose(tok, symlink("ex/tokenizer/secret.txt", "{recipe}")), "symbolic link"),
        ("tokenizer-dir-symlink", compose(tok, lambda env: shutil.rmtree(env.case / "ex" / "tokenizer"), symlink("ex/tokenizer", "{export_tok}/tokenizer")), "not a directory"),
    ]:
        cases.append(Case(f"generate-onnx-{name}", "verify", _ONNX_READERS["generate-onnx"], fragment, setup))
    for name, value, fragment in [("empty-key", "", "set but empty"), ("blank-key", "  ", "set but empty")]:
        setup = set_env("SQ_TRT_MANIFEST_KEY", value)
        cases.append(Case(f"smooth-{name}", "verify", ("smooth", *TINY, "--act-scales", "{scales}", "--out", "{out}"), fragment, setup))
    return cases


# (flag, value, fragment of the one-line error): every numeric flag of generate, each bound.
_BAD_NUMBERS = [
    ("--temperature", "nan", "finite"),
    ("--temperature", "inf", "finite"),
    ("--temperature", "-inf", "--temperature"),  # argparse reads it as an option: a usage error, exit 1
    ("--temperature", "1e-310", "--temperature"),
    ("--temperature", "-0.5", "--temperature"),
    ("--temperature", "1000", "--temperature"),
    ("--top-p", "0", "--top-p"),
    ("--top-p", "1.5", "--top-p"),
    ("--top-p", "nan", "--top-p"),
    ("--top-k", "-1", "--top-k"),
    ("--seed", "-1", "--seed"),
    ("--seed", str(2**64), "--seed"),
    ("--threads", "0", "--threads"),
    ("--threads", "-1", "--threads"),
    ("--threads", "100000", "--threads"),
    ("--max-context", "0", "--max-context"),
    ("--max-context", "100000000", "--max-context"),
    ("--max-context", "600", "past the 512 positions"),
    ("--max-new-tokens", "0", "--max-new-tokens"),
    ("--max-new-tokens", "-3", "--max-new-tokens"),
]


def _with_positions(data: dict) -> None:  # type: ignore[type-arg]
    data["extra"]["max_positions"] = 512  # what export records for a 512-position model


def bounds_cases() -> list[Case]:
    """Numbers out of bounds, refused with one line before the model loads (or the engine builds)."""
    base = ("generate", "--model", "tiny:llama", "--prompt", "hi", "--max-new-tokens", "1")
    export = compose(copy("export", "ex"), edit_manifest(_with_positions, name="ex"))
    build = (*_BUILD, "--onnx", "{case}/ex/model.onnx")
    cases = [
        Case("build-max-context-past-positions", "bounds", (*build, "--max-context", "600", "--max-input", "16"), "past the model's 512 positions", export),
        Case("build-max-context-absurd", "bounds", (*build, "--max-context", "100000000"), "max_context", export),
        Case("build-max-batch-absurd", "bounds", (*build, "--max-batch", "100000"), "max_batch", export),
    ]
    for flag, value, fragment in _BAD_NUMBERS:
        argv = (*base, flag, value) if flag != "--max-new-tokens" else (*base[:-2], flag, value)
        cases.append(Case(f"generate{flag}={value}", "bounds", argv, fragment))
    return cases


def generate_input_cases() -> list[Case]:
    """Prompt files and graphs that used to end in a traceback (issue 28, class 4)."""
    base = ("generate", "--model", "tiny:llama", "--max-new-tokens", "1")
    onnx = ("generate", "--prompt", "hi", "--max-context", "16", "--tokenizer", "tiny:llama", "--onnx")
    rows = [
        ("prompts-binary", (*base, "--prompts", "{case}/p.txt"), "not UTF-8", write("p.txt", b"\xff\xfe\x00bin")),
        ("prompts-jsonl-broken", (*base, "--prompts", "{case}/p.jsonl"), "not valid JSON", write("p.jsonl", '{"prompt": "a"}\n{bad\n')),
        ("prompts-jsonl-deep", (*base, "--prompts", "{case}/p.jsonl"), "not valid JSON", write("p.jsonl", "[" * 100000 + "\n")),
        ("prompts-nul", (*base, "--prompts", "{case}/p.txt"), "NUL", write("p.txt", "a\x00b\n")),
        ("prompt-nul", (*base, "--prompt", "a\x00b"), "NUL", None),
        ("onnx-not-onnx", (*onnx, "{case}/m.onnx"), "not an ONNX model", write("m.onnx", "hello\n")),
        ("onnx-manifest-corrupt", (*onnx, "{case}/ex/model.onnx"), "not valid JSON", compose(copy("export", "ex"), write("ex/manifest.json", "{bad"))),
    ]
    return [Case(name, "generate", argv, fragment, setup) for name, argv, fragment, setup in rows]


def usage_cases() -> list[Case]:
    """argparse usage errors: one line and exit 1, the documented code (was a usage block and exit 2)."""
    rows = [
        ("unknown-command", ("nope",), "invalid choice"),
        ("unknown-flag", ("calibrate", "--smaples", "2"), "unrecognized arguments"),
        ("missing-required", ("export", "--smoothed", "x"), "--out"),
        ("invalid-int", ("calibrate", "--samples", "x"), "invalid int value"),
        ("invalid-choice", ("export", "--act-mode", "per_row", "--out", "{out}"), "invalid choice"),
        ("option-as-value", ("generate", "--model", "tiny:llama", "--prompt", "-x"), "expected one argument"),
        ("exclusive", ("generate", "--model", "tiny:llama", "--onnx", "m.onnx", "--prompt", "hi"), "not allowed with"),
        ("plugins-sub", ("plugins", "nope"), "invalid choice"),
    ]
    return [Case(name, "usage", argv, fragment) for name, argv, fragment in rows]


_OVERLAP = "overlaps the input"


def overlap_cases() -> list[Case]:
    """An --out that is, sits inside or holds one of the command's inputs: refused before anything is written."""
    sm, sc, cmp = copy("smoothed"), copy("scales"), copy("compare")
    rows = [
        ("export-inside-smoothed", ("export", "--smoothed", "{case}/x", "--out", "{case}/x/sub"), sm),
        ("export-is-smoothed-force", ("export", "--smoothed", "{case}/x", "--out", "{case}/x", "--force"), sm),
        ("export-holds-smoothed-force", ("export", "--smoothed", "{case}/w/x", "--out", "{case}/w", "--force"), copy("smoothed", "w/x")),
        ("export-inside-model", ("export", "--model", "{case}/x", "--out", "{case}/x/onnx"), sm),
        ("smooth-inside-scales", ("smooth", *TINY, "--act-scales", "{case}/x", "--out", "{case}/x/out"), sc),
        ("report-inside-results", ("report", "--results", "{case}/x", "--out", "{case}/x/report"), cmp),
        ("replay-inside-results", ("compare", "--load-results", "{case}/x", "--out", "{case}/x/o", "--no-progress"), cmp),
        ("compare-is-candidate-dir-force", (*_CMP, "--candidate", "c={case}/ex/model.onnx", "--out", "{case}/ex", "--force"), copy("export", "ex")),
        ("calibrate-inside-model", ("calibrate", "--model", "{case}/x", "--no-progress", "--out", "{case}/x/scales"), sm),
    ]
    return [Case(name, "overlap", argv, _OVERLAP, setup) for name, argv, setup in rows]


def all_cases() -> list[Case]:
    """The whole table."""
    return (
        manifest_cases()
        + output_cases()
        + model_cases()
        + data_cases()
        + recipe_cases()
        + compare_cases()
        + report_cases()
        + triton_cases()
        + concurrency_cases()
        + verify_cases()
        + bounds_cases()
        + usage_cases()
        + generate_input_cases()
        + overlap_cases()
    )
