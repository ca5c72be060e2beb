"""Artifacts: what one stage writes and a later one reads, and the only way stages meet.

:mod:`~sq_trt.artifacts.manifest` (artifact directories, atomic writes, ``manifest.json``),
:mod:`~sq_trt.artifacts.act_scales` (the calibrate stage's activation ranges),
:mod:`~sq_trt.artifacts.smoothed` (the smooth stage's checkpoint) and
:mod:`~sq_trt.artifacts.comparison` (the compare stage's metrics and saved iterations).
A stage reads another stage's output only through this package
(``scripts/check_imports.py``). All of it is light to import: torch and safetensors load
inside the functions that need them.
"""

from sq_trt.artifacts.act_scales import (
    CALIBRATE_STAGE,
    SCALES_FILE,
    ActScales,
    check_model_matches,
    load_act_scales,
    read_safetensors,
    read_scales_file,
    save_act_scales,
    write_scales_file,
)
from sq_trt.artifacts.manifest import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    SIGNATURE_NAME,
    SIGNING_KEY_ENV,
    Manifest,
    artifact_dir,
    atomic_dir,
    atomic_write_bytes,
    atomic_write_text,
    check_writable_output,
    hash_bytes,
    hash_file,
    hash_json,
    is_confined,
    library_versions,
    load_manifest,
    os_error_message,
    remove_stale_siblings,
    sign_manifest,
    signing_key,
    verified_parent_manifest,
    verify_manifest_files,
)
from sq_trt.artifacts.smoothed import FACTORS_FILE, SMOOTH_STAGE, load_smoothed

__all__ = [
    "CALIBRATE_STAGE",
    "FACTORS_FILE",
    "MANIFEST_NAME",
    "SCALES_FILE",
    "SCHEMA_VERSION",
    "SIGNATURE_NAME",
    "SIGNING_KEY_ENV",
    "SMOOTH_STAGE",
    "ActScales",
    "Manifest",
    "artifact_dir",
    "atomic_dir",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_model_matches",
    "check_writable_output",
    "hash_bytes",
    "hash_file",
    "hash_json",
    "is_confined",
    "library_versions",
    "load_act_scales",
    "load_manifest",
    "load_smoothed",
    "os_error_message",
    "read_safetensors",
    "read_scales_file",
    "remove_stale_siblings",
    "save_act_scales",
    "sign_manifest",
    "signing_key",
    "verified_parent_manifest",
    "verify_manifest_files",
    "write_scales_file",
]
