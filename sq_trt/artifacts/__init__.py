"""Artifacts: what one stage writes and a later one reads, and the only way stages meet.

:mod:`~sq_trt.artifacts.manifest` (artifact directories, atomic writes, ``manifest.json``)
and :mod:`~sq_trt.artifacts.act_scales` (the calibrate stage's activation ranges and their
file). Both are light to import: torch and safetensors load inside the functions that
need them.
"""

from sq_trt.artifacts.act_scales import (
    SCALES_FILE,
    ActScales,
    check_model_matches,
    read_safetensors,
    read_scales_file,
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

__all__ = [
    "MANIFEST_NAME",
    "SCALES_FILE",
    "SCHEMA_VERSION",
    "SIGNATURE_NAME",
    "SIGNING_KEY_ENV",
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
    "load_manifest",
    "os_error_message",
    "read_safetensors",
    "read_scales_file",
    "remove_stale_siblings",
    "sign_manifest",
    "signing_key",
    "verified_parent_manifest",
    "verify_manifest_files",
    "write_scales_file",
]
