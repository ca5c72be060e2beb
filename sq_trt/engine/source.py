"""What a source ONNX holds, read before any TensorRT work: validity, plugin nodes, provenance.

Reading the graph first turns a corrupt file, a plugin node on a backend that
cannot load it, and a missing export manifest into clear errors or facts for the
engine manifest, instead of a parser crash half-way through a build.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sq_trt.artifacts import hash_file, verified_parent_manifest
from sq_trt.errors import BuildError, ConfigError
from sq_trt.plugin_spec import ONNX_DOMAIN


@dataclass(frozen=True)
class PluginNode:
    """One custom ``sq_trt`` node the TensorRT parser maps to a plugin."""

    name: str
    op_type: str
    version: str
    namespace: str
    # Fused GEMMs only: "aligned" or "unaligned", the AOT variant the plugin compiles for this
    # node's weight (sq_trt.plugins.alignment); None for other plugins.
    gemm_variant: str | None = None


@dataclass(frozen=True)
class OnnxSource:
    """Facts about the ONNX an engine is built from.

    Attributes:
        path: The ONNX file.
        sha256: Its content hash (``sha256:<hex>``), recorded in the engine manifest.
        plugin_nodes: Nodes of domain ``sq_trt`` (need the sq-trt plugin).
        export_manifest: Fingerprint and stage of the artifact directory holding the ONNX, if any.
        calibration_hash: The content hash of the activation scales export used
            (``act_scales_hash``), if any.
        max_positions: The model's ``max_position_embeddings`` that export recorded, if any.
    """

    path: Path
    sha256: str
    plugin_nodes: tuple[PluginNode, ...] = ()
    export_manifest: dict[str, str] = field(default_factory=dict)
    calibration_hash: str | None = None
    max_positions: int | None = None


def _attribute(node: object, name: str, default: str) -> str:
    import onnx

    for attr in node.attribute:  # type: ignore[attr-defined]
        if attr.name == name:
            value = onnx.helper.get_attribute_value(attr)
            return value.decode() if isinstance(value, bytes) else str(value)
    return default


def _calibration_hash(manifest_extra: dict[str, object]) -> str | None:
    """The content hash of the activation scales an export used (its manifest's ``act_scales_hash``)."""
    value = manifest_extra.get("act_scales_hash")
    return value if isinstance(value, str) else None


_ONNX_FLOATS = {1: "fp32", 10: "fp16", 16: "bf16"}


def _gemm_variant(node: Any, model: Any) -> str | None:
    """The alignment variant a fused GEMM node's plugin will compile, from its weight's (N, K).

    The weight (input 2) is an initializer whose dims the file holds even when its data is
    external; ``y``'s dtype comes from the graph's type information (fp16 when absent: the
    export's dtype, and the stricter rule for N).
    """
    from sq_trt.plugin_spec import QUANT_W8A8_GEMM, W8A8_GEMM
    from sq_trt.plugins.alignment import alignment_variant

    if node.op_type not in (W8A8_GEMM, QUANT_W8A8_GEMM) or len(node.input) < 3:
        return None
    weights = {init.name: tuple(init.dims) for init in model.graph.initializer}
    dims = weights.get(node.input[2])
    typed = {v.name: v.type.tensor_type.elem_type for v in (*model.graph.value_info, *model.graph.output)}
    out = _ONNX_FLOATS.get(typed.get(node.output[0], 10), "fp16")
    if dims is None or len(dims) != 2:
        return alignment_variant(None, None, out)
    return alignment_variant(int(dims[0]), int(dims[1]), out)


def read_onnx_source(path: str | Path) -> OnnxSource:
    """Validate an ONNX file's structure and collect what the build needs to know.

    External weight files are not loaded (the TensorRT parser reads them itself).

    Raises:
        BuildError: The file is missing or is not a loadable ONNX model.
        ArtifactError: It sits in an artifact directory whose manifest is corrupt.
    """
    import onnx

    onnx_path = Path(path)
    if not onnx_path.is_file():
        raise BuildError(f"ONNX file {onnx_path} does not exist; run `sq-trt export` first or fix --onnx")
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, ValueError... for a corrupt file
        raise BuildError(
            f"{onnx_path} is not a valid ONNX model ({type(exc).__name__}: {exc}); re-export it with `sq-trt export`"
        ) from exc
    if not model.graph.node:
        raise BuildError(f"{onnx_path} has an empty graph (no nodes); re-export it with `sq-trt export`")
    plugins = tuple(
        PluginNode(
            name=node.name or f"<unnamed {node.op_type} #{index}>",
            op_type=node.op_type,
            version=_attribute(node, "plugin_version", "1"),
            namespace=_attribute(node, "plugin_namespace", node.domain),
            gemm_variant=_gemm_variant(node, model),
        )
        for index, node in enumerate(model.graph.node)
        if node.domain == ONNX_DOMAIN
    )
    export_manifest, calibration = artifact_provenance(onnx_path)
    manifest = verified_parent_manifest(onnx_path) if export_manifest else None
    positions = manifest.extra.get("max_positions") if manifest is not None else None
    return OnnxSource(
        onnx_path,
        hash_file(onnx_path),
        plugins,
        export_manifest,
        calibration,
        positions if isinstance(positions, int) and not isinstance(positions, bool) else None,
    )


def check_profile_positions(profiles: Sequence[Any], limit: int | None) -> None:
    """Refuse an optimization profile whose sequence range passes the model's positions.

    Raises:
        ConfigError: Naming the profile and the limit (export records it as ``max_positions``).
    """
    if limit is None:
        return
    for profile in profiles:
        # A generation profile's positions are its tokens plus the cached ones before them.
        longest = max(profile.seq) + max(getattr(profile, "past", None) or (0,))
        if longest > limit:
            raise ConfigError(
                f"build profile {profile.name!r} reaches position {longest} (seq + past), past the model's {limit} "
                f"positions (max_position_embeddings); use a seq range (or --max-context) ending at <= {limit}"
            )


def artifact_provenance(path: Path) -> tuple[dict[str, str], str | None]:
    """Stage and fingerprint of the artifact directory holding ``path``, after checking its hash.

    Returns:
        ``({"stage", "fingerprint"}, calibration hash)``, or ``({}, None)`` when the
        directory has no manifest.

    Raises:
        ArtifactError: The manifest is corrupt, or the file is not the one it recorded
            (see :func:`sq_trt.artifacts.verified_parent_manifest`).
    """
    manifest = verified_parent_manifest(path)
    if manifest is None:
        return {}, None
    export_manifest = {"stage": manifest.stage, "fingerprint": manifest.fingerprint}
    return export_manifest, _calibration_hash(manifest.extra)
