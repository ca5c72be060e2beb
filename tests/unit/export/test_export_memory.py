"""The export's memory-saving paths give the same tensors and files as the plain ones."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from sq_trt.export.onnx_export import export_float_onnx, model_in_dtype
from sq_trt.export.onnx_files import write_onnx_streamed
from sq_trt.models.loading import load_model


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_fp16_copy_equals_deepcopy_then_cast(family: str) -> None:
    loaded = load_model(f"tiny:{family}")
    model = loaded.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cast = model_in_dtype(model, "float16")
    reference = copy.deepcopy(model).to(torch.float16)

    got, want = cast.state_dict(), reference.state_dict()
    assert got.keys() == want.keys()
    for key in want:
        assert got[key].dtype == want[key].dtype, key
        assert torch.equal(got[key], want[key]), key
    got_buffers, want_buffers = dict(cast.named_buffers()), dict(reference.named_buffers())
    assert {k: v.dtype for k, v in got_buffers.items()} == {k: v.dtype for k, v in want_buffers.items()}
    # The source model is untouched, and the copy shares no storage with it.
    for key, value in model.state_dict().items():
        assert value.dtype == torch.float32 or not value.is_floating_point()
        assert torch.equal(value, before[key]), key
    source_ptrs = {p.data_ptr() for p in model.parameters()}
    assert not source_ptrs & {p.data_ptr() for p in cast.parameters()}
    # Tied weights stay tied (one tensor), as deepcopy keeps them.
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert (cast.get_output_embeddings().weight is cast.get_input_embeddings().weight) == tied
    assert not cast.training


def test_same_dtype_is_the_model_itself() -> None:
    loaded = load_model("tiny:llama")
    assert model_in_dtype(loaded.model, "float32") is loaded.model


def _graph_with_every_side() -> onnx.ModelProto:
    """A model with fields before and after ``graph``, and graph fields before and after ``initializer``."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float16), "w0"),
        numpy_helper.from_array(
            rng.integers(-127, 128, (4, 200)).astype(np.int8), "w1"
        ),  # > 127 B: 2-byte length
        numpy_helper.from_array(np.array([], dtype=np.float32), "empty"),
    ]
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w0"], ["y"], name="mm"),
            helper.make_node("Identity", ["y"], ["z"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["b", 3])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT16, ["b", 4])],
        initializer=inits,
        doc_string="graph doc",
        value_info=[helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["b", 4])],
    )
    model = helper.make_model(graph, producer_name="sq-trt-test", doc_string="model doc")
    helper.set_model_props(model, {"key": "value"})
    model.functions.add().name = "f"
    return model


@pytest.mark.parametrize("case", ["every_field", "tiny_llama_export"])
def test_streamed_write_is_byte_identical_to_serialize(tmp_path: Path, case: str) -> None:
    if case == "every_field":
        model = _graph_with_every_side()
    else:
        loaded = load_model("tiny:llama")
        model = export_float_onnx(loaded.model, loaded.spec, dtype="float16")
    assert len(model.graph.initializer) > 1
    write_onnx_streamed(model, tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx").read_bytes() == model.SerializeToString()
    assert onnx.load(str(tmp_path / "m.onnx")) == model


def _graphs_with_data(directory: Path) -> dict[str, onnx.ModelProto]:
    """Both files of an export, external data read in and its bookkeeping cleared (compares values)."""
    graphs = {}
    for name in ("model.fp16.onnx", "model.int8.onnx"):
        proto = onnx.load(str(directory / name))
        for tensor in proto.graph.initializer:
            tensor.data_location = onnx.TensorProto.DEFAULT
            del tensor.external_data[:]
        graphs[name] = proto
    return graphs


@pytest.mark.parametrize("encoding", ["portable", "fused-gemm"])
def test_the_external_data_path_writes_the_same_graphs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, encoding: str
) -> None:
    """Over the threshold, the FP16 file is written from the exporter's graph and the INT8 rewrite
    reads back only the tensors it keeps (the norm fusion reads its norms); under it, both files come
    from protos in memory. Same nodes, same initializer values, in both files."""
    from sq_trt.export import onnx_files
    from sq_trt.export.stage import ExportConfig, export_model

    loaded = load_model("tiny:llama")
    config = ExportConfig(act_mode="per_token", encoding=encoding)
    export_model(loaded, tmp_path / "in-memory", config=config)
    monkeypatch.setattr(onnx_files, "EXTERNAL_DATA_THRESHOLD", 0)
    export_model(loaded, tmp_path / "external", config=config)
    assert (tmp_path / "external" / "model.fp16.onnx.data").is_file()
    assert (tmp_path / "external" / "model.int8.onnx.data").is_file()
    assert not (tmp_path / "in-memory" / "model.fp16.onnx.data").exists()
    in_memory, external = _graphs_with_data(tmp_path / "in-memory"), _graphs_with_data(tmp_path / "external")
    for name, graph in in_memory.items():
        assert list(graph.graph.node) == list(external[name].graph.node), name
        got = {tensor.name: tensor for tensor in external[name].graph.initializer}
        assert got.keys() == {tensor.name for tensor in graph.graph.initializer}, name
        for tensor in graph.graph.initializer:
            np.testing.assert_array_equal(
                onnx.numpy_helper.to_array(got[tensor.name]), onnx.numpy_helper.to_array(tensor), tensor.name
            )


@pytest.mark.parametrize("save", [False, True])
def test_the_fp16_torch_copy_is_freed_after_the_export(tmp_path: Path, save: bool) -> None:
    """onnxscript's rewrite rules keep the last graph they matched; its tensors (the FP16 torch copy,
    2.5 GB at 1.24 B parameters) must not stay alive with it."""
    import gc
    import weakref

    from sq_trt.export import onnx_export

    loaded = load_model("tiny:llama")
    copies: list[weakref.ref[torch.Tensor]] = []
    real = onnx_export.model_in_dtype

    def spy(model: torch.nn.Module, dtype: str) -> torch.nn.Module:
        cast = real(model, dtype)
        copies.extend(weakref.ref(parameter) for parameter in cast.parameters())
        return cast

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(onnx_export, "model_in_dtype", spy)
        graph = export_float_onnx(loaded.model, loaded.spec, dtype="float16", save=tmp_path / "m.onnx" if save else None)
    gc.collect()
    assert copies and len(graph.graph.initializer) > 1
    assert [ref for ref in copies if ref() is not None] == []
