"""ONNX files on disk: one protobuf, or a graph beside its external data, written without extra copies.

A graph of more than :data:`EXTERNAL_DATA_THRESHOLD` bytes of weights is saved with its tensors
in ``<file>.data`` (protobuf refuses messages over 2 GiB). At 1 B parameters every copy of the
weights is gigabytes, so these writers avoid them: :func:`write_ir` saves the exporter's graph
straight from its torch tensors, :func:`write_onnx_streamed` serialises one initializer at a time,
and :func:`internalize` reads back only the tensors a rewrite keeps.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnx

# Protobuf refuses messages over 2 GiB; stay well below it before switching to external data.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


def initializer_bytes(
    model: onnx.ModelProto, *, types: tuple[int, ...] | None = None, external: bool = False
) -> int:
    """Bytes of the in-memory initializers, from their shapes and element types.

    Used instead of ``ModelProto.ByteSize()``, which serialises the whole message to
    measure it: a transient copy of every weight (several GB at 1B parameters).
    Tensors in external data count zero unless ``external``.

    Args:
        model: The graph.
        types: Only initializers of these ONNX element types (None: all).
        external: Count the tensors kept in external data files too.
    """
    import math

    import onnx

    total = 0
    for init in model.graph.initializer:
        if types is not None and init.data_type not in types:
            continue
        if init.data_location == onnx.TensorProto.EXTERNAL and not external:
            continue
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
        total += math.prod(init.dims) * itemsize
    return total


def save_onnx(model: onnx.ModelProto, path: Path) -> None:
    """Save an ONNX model, with external data (``<name>.data``) when it is too big for one protobuf."""
    import onnx

    # Sized from the initializers' shapes: ByteSize() would serialise the whole graph once more.
    if initializer_bytes(model) > EXTERNAL_DATA_THRESHOLD:
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=f"{path.name}.data",
        )
    else:
        write_onnx_streamed(model, path)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | 0x80 if value else low)
        if not value:
            return bytes(out)


def _fields_bytes(message: Any, keep: Any) -> bytes:
    """The serialization of ``message``'s fields whose numbers pass ``keep`` (the others left out, not copied)."""
    part = type(message)()
    for descriptor, value in message.ListFields():
        if not keep(descriptor.number):
            continue
        if isinstance(value, str | bytes | int | float):
            setattr(part, descriptor.name, value)
        elif hasattr(value, "extend"):
            getattr(part, descriptor.name).extend(value)
        else:
            getattr(part, descriptor.name).CopyFrom(value)
    return part.SerializeToString()


def write_onnx_streamed(model: onnx.ModelProto, path: Path) -> None:
    """Write ``model`` as one ``.onnx`` file, the bytes of ``SerializeToString()``, one initializer at a time.

    ``onnx.save_model`` serialises the whole message into one ``bytes`` first: a second copy
    of every weight (1.5 GB for the 1.24 B INT8 graph) at the export's last step. Protobuf
    writes fields in field-number order, so the file is the model's fields before ``graph``,
    the graph's fields before ``initializer``, each initializer, then the fields after them.
    """
    graph = model.graph
    init_field = type(graph).DESCRIPTOR.fields_by_name["initializer"].number
    graph_field = type(model).DESCRIPTOR.fields_by_name["graph"].number
    head = _fields_bytes(graph, lambda n: n < init_field)
    tail = _fields_bytes(graph, lambda n: n > init_field)
    init_tag = _varint(init_field << 3 | 2)  # wire type 2: length-delimited
    sizes = [init.ByteSize() for init in graph.initializer]
    graph_size = len(head) + len(tail) + sum(len(init_tag) + len(_varint(n)) + n for n in sizes)
    with open(path, "wb") as handle:
        handle.write(_fields_bytes(model, lambda n: n < graph_field))
        handle.write(_varint(graph_field << 3 | 2) + _varint(graph_size) + head)
        for init, size in zip(graph.initializer, sizes, strict=True):
            data = init.SerializeToString()
            assert len(data) == size, f"initializer {init.name} changed size while being written"
            handle.write(init_tag + _varint(size))
            handle.write(data)
        handle.write(tail)
        handle.write(_fields_bytes(model, lambda n: n > graph_field))


def onnx_bytes(directory: Path, name: str) -> int:
    """Bytes of an ONNX file plus its external data file, if any."""
    return sum(p.stat().st_size for p in (directory / name, directory / f"{name}.data") if p.is_file())


def write_ir(graph: Any, path: Path) -> onnx.ModelProto:
    """Write an ``onnx_ir`` model to ``path``; return it as a proto.

    Over :data:`EXTERNAL_DATA_THRESHOLD`, the tensors go to ``<name>.data`` one at a time,
    straight from the exporter's torch tensors, and the proto returned holds references into
    that file instead of the weights: no serialised copy of the weights ever exists in memory
    (the FP16 torch copy is the only one). Smaller graphs are converted and written streamed.

    Args:
        graph: An ``onnx_ir.Model`` (left unchanged).
        path: The ``.onnx`` file to write.
    """
    import onnx
    import onnx_ir as ir

    tensors = [value.const_value for value in graph.graph.initializers.values()]
    size = sum(tensor.nbytes for tensor in tensors if tensor is not None)
    if size <= EXTERNAL_DATA_THRESHOLD:
        proto = ir.to_proto(graph)
        write_onnx_streamed(proto, path)
        return proto
    ir.save(graph, str(path), external_data=f"{path.name}.data", size_threshold_bytes=1024)
    return onnx.load(str(path), load_external_data=False)


def internalize(model: onnx.ModelProto, directory: Path, *, skip: Collection[str] = ()) -> None:
    """Read into ``model`` the initializers it keeps in external data files of ``directory``.

    The INT8 graph is rewritten in place from the FP16 one, which may point into
    ``model.fp16.onnx.data``; each file has to load on its own, so the float tensors the
    rewrite keeps (embedding, LM head, norms, excluded linears) are read back before it.

    Args:
        model: The graph.
        directory: Where its external data files are.
        skip: Initializers not to read (the weights the rewrite replaces).
    """
    import onnx
    from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data

    for tensor in model.graph.initializer:
        if tensor.name in skip or not uses_external_data(tensor):
            continue
        load_external_data_for_tensor(tensor, str(directory))
        tensor.data_location = onnx.TensorProto.DEFAULT
        del tensor.external_data[:]
