"""Run the exported ONNX files on CPU with ONNX Runtime (the reference executor).

ONNX Runtime cannot run the ``sq_trt::PerTokenQuant`` plugin node, and its
Python custom-op API refuses float16. So :func:`session_from_onnx` rewrites
each plugin node, in memory, into the portable standard-op subgraph built by
:func:`sq_trt.export.qdq.portable_per_token_nodes`: one definition of the
semantics, any dtype. The file on disk is never changed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sq_trt import plugin_spec
from sq_trt.errors import ExportError

if TYPE_CHECKING:
    import numpy as np
    import onnx
    import onnxruntime

# Protobuf cannot serialise a single message over 2 GiB; larger models go through a temp file.
_PROTO_LIMIT = 2**31 - 1
# Room for the graph's nodes and attributes on top of the initializers' bytes.
_GRAPH_MARGIN = 256 * 2**20
# ONNX Runtime's session option (kOrtSessionOptionsDisableQuantQDQ) that turns off the QDQ
# node-unit fusions into integer kernels; see session_options.
QDQ_FUSION_KEY = "session.disable_quant_qdq"


def expand_plugin_nodes(model: onnx.ModelProto) -> int:
    """Replace every ``sq_trt`` node with standard ops, in place.

    ``PerTokenQuant`` becomes the portable per-token subgraph; the fused nodes
    (``RMSNormPerTokenQuant``, ``LayerNormPerTokenQuant``, ``W8A8Gemm``,
    ``QuantW8A8Gemm``) become the subgraphs of :mod:`sq_trt.runtime.fused_cpu`.

    Returns:
        How many nodes were replaced.

    Raises:
        ExportError: A ``sq_trt`` node of another type, or one with the wrong inputs or attributes.
    """
    from sq_trt.export.qdq import GraphBuilder, portable_per_token_nodes
    from sq_trt.runtime.fused_cpu import EXPANSIONS

    builder = GraphBuilder(act_dtype=0)  # CastLike is used, so the activation dtype is not needed
    builder.reserve(init.name for init in model.graph.initializer)
    builder.initializer_dims = {init.name: tuple(init.dims) for init in model.graph.initializer}
    builder.reserve(name for node in model.graph.node for name in (*node.input, *node.output, node.name))
    nodes: list[Any] = []
    replaced = 0
    for node in model.graph.node:
        if node.domain == plugin_spec.ONNX_DOMAIN and node.op_type == plugin_spec.PER_TOKEN_QUANT:
            if len(node.input) != 1 or len(node.output) != 2:
                raise ExportError(
                    f"{plugin_spec.PER_TOKEN_QUANT} node {node.name!r} has {len(node.input)} inputs and "
                    f"{len(node.output)} outputs, expected 1 and 2 (x -> x_q, amax)"
                )
            prefix = f"{node.name or node.output[0]}/cpu"
            nodes.extend(
                portable_per_token_nodes(
                    node.input[0], node.output[0], node.output[1], prefix, builder, x_dtype=None
                )
            )
            replaced += 1
        elif node.domain == plugin_spec.ONNX_DOMAIN and node.op_type in EXPANSIONS:
            nodes.extend(EXPANSIONS[node.op_type](node, builder))
            replaced += 1
        elif node.domain == plugin_spec.ONNX_DOMAIN:
            raise ExportError(
                f"node {node.name!r} is {node.domain}::{node.op_type}, which the CPU executor cannot run; "
                f"only {[plugin_spec.PER_TOKEN_QUANT, *EXPANSIONS]} have a CPU equivalent"
            )
        else:
            nodes.append(node)
    if replaced:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        model.graph.initializer.extend(builder.initializers)
        # The fused GEMMs' ones / zeros stand-ins (has_smooth / has_bias 0) are read by no standard op.
        used = {name for node in nodes for name in node.input}
        initializers = model.graph.initializer
        for position in reversed(range(len(initializers))):
            if initializers[position].name not in used:
                del initializers[position]
        kept = [entry for entry in model.opset_import if entry.domain != plugin_spec.ONNX_DOMAIN]
        del model.opset_import[:]
        model.opset_import.extend(kept)
    return replaced


def session_options(threads: int | None = None) -> onnxruntime.SessionOptions:
    """ONNX Runtime session options under which a Q/DQ graph computes what TensorRT does.

    Q/DQ stays Q/DQ: ONNX Runtime otherwise fuses ``QuantizeLinear -> DequantizeLinear
    -> MatMul`` into ``MatMulIntegerToFloat``, whose u8s8 kernel on AVX2 CPUs without
    VNNI saturates 16-bit pair sums (``vpmaddubsw``). On such a CPU that cost the tiny
    models' per-tensor graphs 0.5-0.9 of the whole quantization error. TensorRT
    accumulates INT8 products in int32 exactly, which the unfused float graph reproduces
    up to float rounding. The other graph optimizations stay on.

    Args:
        threads: Intra-op threads (None: one per CPU this process may run on when it is
            restricted to fewer than the machine has, by ``taskset`` or a cpuset; otherwise
            ONNX Runtime's default, which counts the machine's cores and would put several
            spinning threads on one allowed core).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry(QDQ_FUSION_KEY, "1")
    if threads is None:
        allowed = len(os.sched_getaffinity(0))
        threads = allowed if allowed < (os.cpu_count() or allowed) else None
    if threads is not None:
        options.intra_op_num_threads = threads
    return options


def session_from_onnx(
    model: str | os.PathLike[str] | onnx.ModelProto,
    *,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    threads: int | None = None,
) -> onnxruntime.InferenceSession:
    """An ONNX Runtime session for an exported file, plugin nodes rewritten to standard ops.

    Args:
        model: Path of an ``.onnx`` file (external data next to it is loaded) or a loaded model.
        providers: ONNX Runtime execution providers.
        threads: Intra-op threads (None: ONNX Runtime's default).

    Returns:
        The session (Polygraphy's ``OnnxrtRunner`` accepts it as its ``sess``).

    Raises:
        ExportError: The file is missing or a node cannot run on CPU.
    """
    import onnx
    import onnxruntime as ort

    path: Path | None = None
    if isinstance(model, onnx.ModelProto):
        proto = onnx.ModelProto()
        proto.CopyFrom(model)
    else:
        path = Path(model)
        if not path.is_file():
            raise ExportError(f"ONNX file {path} does not exist; run `sq-trt export` first")
        proto = onnx.load(str(path))
    options = session_options(threads)
    # ONNX Runtime is given a file, never serialized bytes: from bytes it keeps its own copy of the
    # model next to ours while it builds the session (the demo's FP16 session peaked at 1.57 GB
    # from bytes, 1.08 GB from the file, with identical outputs).
    if not expand_plugin_nodes(proto) and path is not None:
        del proto
        return ort.InferenceSession(str(path), options, providers=list(providers))
    from sq_trt.export.onnx_files import initializer_bytes

    # Protobuf cannot serialise a message over 2 GiB: large models keep their weights beside it.
    external = initializer_bytes(proto) >= _PROTO_LIMIT - _GRAPH_MARGIN
    with tempfile.TemporaryDirectory(prefix="sq-trt-ort-") as tmp:
        tmp_path = os.path.join(tmp, "model.onnx")
        onnx.save_model(proto, tmp_path, save_as_external_data=external, location="model.onnx.data")
        del proto
        return ort.InferenceSession(tmp_path, options, providers=list(providers))


class OnnxModelRunner:
    """Runs an exported model: ``input_ids`` in, logits (or hidden states) out, as numpy float32.

    Example:
        >>> runner = OnnxModelRunner("out/export/model.int8.onnx")
        >>> logits = runner.run(input_ids)            # [batch, seq, vocab]
        >>> ppl = perplexity(runner.run, chunks)     # decoders only (sq_trt.runtime.perplexity)
    """

    def __init__(
        self, model: str | os.PathLike[str] | onnx.ModelProto, *, threads: int | None = None
    ) -> None:
        """Create the ONNX Runtime session (see :func:`session_from_onnx`)."""
        self.session = session_from_onnx(model, threads=threads)
        self.input_names = [value.name for value in self.session.get_inputs()]
        self.output_name = self.session.get_outputs()[0].name

    def run(self, input_ids: Any, attention_mask: Any = None) -> np.ndarray:
        """One forward pass.

        Args:
            input_ids: int64 ``[batch, seq]`` (numpy array or torch tensor).
            attention_mask: For encoders; all ones when omitted.

        Returns:
            The first output, as float32 numpy.
        """
        import numpy as np

        ids = np.asarray(input_ids.numpy() if hasattr(input_ids, "numpy") else input_ids, dtype=np.int64)
        feeds: dict[str, np.ndarray] = {"input_ids": ids}
        if "attention_mask" in self.input_names:
            mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask, dtype=np.int64)
            feeds["attention_mask"] = mask
        (output,) = self.session.run([self.output_name], feeds)
        return np.asarray(output, dtype=np.float32)
