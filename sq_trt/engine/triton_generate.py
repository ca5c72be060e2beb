"""A Triton model repository that generates text: the generation engine plus a decoupled Python-backend model.

Layout::

    <repo>/<name>_engine/config.pbtxt, 1/model.plan    the TensorRT plan (prefill + decode profiles)
    <repo>/<name>/config.pbtxt                          Python backend, decoupled (streams tokens)
    <repo>/<name>/1/model.py                            the decode loop, calling <name>_engine through BLS
    <repo>/<name>/1/tokenizer/                          tokenizer files

The Python model runs :func:`sq_trt.generate.loop.generate`, the loop ``sq-trt
generate`` runs, with :class:`sq_trt.generate.remote.RemoteStepRunner` whose
``infer`` is one BLS request to the plan model. The KV cache stays on the GPU
between steps: the plan model's ``present.*`` outputs are requested in GPU
memory, taken as torch tensors through DLPack and fed back as the next step's
``past.*``; only the ids go in and the logits come out through host memory.
Before, every token copied the whole cache (2 x layers x batch x kv_heads x
context x head_dim values: 23 KB per token of context for SmolLM2-135M in fp16,
23.6 MB at 1024) to the host and back (computed, not measured: a GPU host times
it, docs/GPU_HOST.md). It sends one response per token
(``text_output`` piece and ``token_id``) and then the final flag. The server
needs sq-trt importable in its Python (``pip install sq-trt`` in the Triton
container, or a custom execution environment).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from sq_trt.artifacts import atomic_dir
from sq_trt.engine.engine_manifest import EngineRecord, load_engine_record
from sq_trt.engine.triton_repo import (
    TRITON_DTYPES,
    check_model_name,
    config_text,
    model_config_module,
    write_model_repository,
)
from sq_trt.errors import ArtifactError

if TYPE_CHECKING:
    from google.protobuf.message import Message

ENGINE_SUFFIX = "_engine"
TOKENIZER_DIR = "tokenizer"
PREFILL, DECODE = "prefill", "decode"

MODEL_PY = '''"""Triton Python backend (decoupled): sq-trt's decode loop over the generation engine, through BLS."""

import json
import os

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from torch.utils.dlpack import from_dlpack, to_dlpack
from transformers import AutoTokenizer

from sq_trt.generate.loop import generate
from sq_trt.generate.remote import RemoteStepRunner
from sq_trt.generate.sampling import SamplingConfig
from sq_trt.models.cache import LOGITS, CacheLayout


def _optional(request, name, default, kind):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return default if tensor is None else kind(tensor.as_numpy().reshape(-1)[0])


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config["parameters"].items()}
        self.engine_model = params["engine_model"]
        self.layout = CacheLayout.from_json(json.loads(params["kv_cache"]))
        self.dtype = params["kv_dtype"]
        self.max_context = int(params["max_context"])
        here = os.path.join(args["model_repository"], args["model_version"])
        self.tokenizer = AutoTokenizer.from_pretrained(os.path.join(here, "tokenizer"))

    def _infer(self, feeds, output_names):
        # The KV cache stays on the GPU between steps: the engine's present.* outputs are asked for in
        # GPU memory and taken as torch tensors through DLPack, and they go back in as the next step's
        # past.* the same way (RemoteStepRunner keeps them as returned). Only the ids (in) and the
        # logits (out) cross to the host.
        inputs = [
            pb_utils.Tensor.from_dlpack(name, to_dlpack(value)) if torch.is_tensor(value)
            else pb_utils.Tensor(name, value)
            for name, value in feeds.items()
        ]
        request = pb_utils.InferenceRequest(
            model_name=self.engine_model,
            requested_output_names=output_names,
            inputs=inputs,
            preferred_memory=pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_GPU, 0),
        )
        response = request.exec()
        if response.has_error():
            raise pb_utils.TritonModelException(response.error().message())
        outputs = {
            name: from_dlpack(pb_utils.get_output_tensor_by_name(response, name).to_dlpack())
            for name in output_names
        }
        outputs[LOGITS] = outputs[LOGITS].float().cpu().numpy()
        return outputs

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            try:
                self._generate(request, sender)
            except Exception as exc:  # reported to the client, the server keeps running
                sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None

    def _generate(self, request, sender):
        text = pb_utils.get_input_tensor_by_name(request, "text_input").as_numpy().reshape(-1)[0]
        prompt = text.decode("utf-8") if isinstance(text, bytes) else str(text)
        sampling = SamplingConfig(
            temperature=_optional(request, "temperature", 0.0, float),
            top_k=_optional(request, "top_k", 0, int),
            top_p=_optional(request, "top_p", 1.0, float),
            seed=_optional(request, "seed", 0, int),
        )
        runner = RemoteStepRunner(
            self._infer, self.layout, self.dtype, max_context=self.max_context, name=self.engine_model
        )
        ids, shown = [], [""]

        def on_token(token):
            ids.append(token)
            decoded = self.tokenizer.decode(ids, skip_special_tokens=True)
            piece, shown[0] = decoded[len(shown[0]):], decoded
            sender.send(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("text_output", np.array([piece.encode("utf-8")], dtype=object)),
                pb_utils.Tensor("token_id", np.array([token], dtype=np.int64)),
            ]))

        generate(
            runner,
            self.tokenizer(prompt)["input_ids"],
            max_new_tokens=_optional(request, "max_tokens", 64, int),
            sampling=sampling,
            eos_token_id=self.tokenizer.eos_token_id,
            on_token=on_token,
        )
'''


# The Python model's request and response tensors: (name, Triton dtype, optional).
_INPUTS = (
    ("text_input", "TYPE_STRING", False),
    ("max_tokens", "TYPE_INT32", True),
    ("temperature", "TYPE_FP32", True),
    ("top_k", "TYPE_INT32", True),
    ("top_p", "TYPE_FP32", True),
    ("seed", "TYPE_INT64", True),
)
_OUTPUTS = (("text_output", "TYPE_STRING", False), ("token_id", "TYPE_INT64", False))


def _python_model_config(name: str, parameters: dict[str, str]) -> Message:
    """The decoupled Python-backend ``ModelConfig`` (Triton's protobuf: every string escaped on output)."""
    pb = model_config_module()
    config = pb.ModelConfig(name=name, backend="python", max_batch_size=0)
    config.model_transaction_policy.decoupled = True
    for field, tensors in ((config.input, _INPUTS), (config.output, _OUTPUTS)):
        for tensor_name, dtype, optional in tensors:
            entry = field.add(name=tensor_name, dims=[1], data_type=pb.DataType.Value(dtype))
            if optional:
                entry.optional = True
    for key, value in parameters.items():
        config.parameters[key].string_value = value
    group = config.instance_group.add(count=1)
    group.kind = pb.ModelInstanceGroup.Kind.Value("KIND_CPU")
    return config


def render_generate_config(
    name: str, engine_model: str, record: EngineRecord, kv_cache: dict[str, object]
) -> str:
    """``config.pbtxt`` of the decoupled Python-backend model that streams tokens.

    Raises:
        ArtifactError: The engine has no generation profiles or cache inputs.
    """
    profiles = {str(p.get("name")) for p in record.profiles}
    pasts = [t for t in record.inputs if t.name.startswith("past_key_values.")]
    if not {PREFILL, DECODE} <= profiles or not pasts:
        raise ArtifactError(
            f"engine {record.plan} has profiles {sorted(profiles)} and {len(pasts)} cache inputs; a generation "
            "model needs a --with-past export built with a `generation:` section (prefill and decode profiles)"
        )
    decode = next(p for p in record.profiles if p.get("name") == DECODE)
    max_past = max(int(s["max"][2]) for n, s in decode["shapes"].items() if n.startswith("past_key_values."))
    assert pasts[0].dtype in TRITON_DTYPES
    parameters = {
        "engine_model": engine_model,
        "kv_cache": json.dumps(kv_cache),
        "kv_dtype": pasts[0].dtype,
        "max_context": str(max_past + 1),
    }
    return config_text(_python_model_config(name, parameters))


def write_generation_repository(
    engine_dir: str | Path,
    target: str,
    repo: str | Path,
    name: str,
    *,
    tokenizer_dir: str | Path,
    kv_cache: dict[str, object],
    release: str | None = None,
    force: bool = False,
) -> Path:
    """Write the plan model (``<name>_engine``) and the streaming Python model (``<name>``).

    Args:
        engine_dir: A generation engine directory (``sq-trt build`` with ``generation:``).
        target: Which ``.plan`` in it.
        repo: The model repository root.
        name: Name of the model clients call.
        tokenizer_dir: The tokenizer saved by ``export --with-past`` (its ``tokenizer/``).
        kv_cache: The export manifest's ``kv_cache`` record (layout of the cache).
        release: Triton release for the serve command.
        force: Replace existing models.

    Returns:
        The Python model's directory.

    Raises:
        ArtifactError: Not a generation engine, no tokenizer, or an existing model without ``force``.
    """
    check_model_name(name)
    record = load_engine_record(engine_dir, target)
    engine_model = name + ENGINE_SUFFIX
    config = render_generate_config(name, engine_model, record, kv_cache)
    tokenizer = Path(tokenizer_dir)
    if not tokenizer.is_dir():
        raise ArtifactError(
            f"tokenizer directory {tokenizer} does not exist; export with --with-past writes it"
        )
    final = Path(repo) / name
    if final.exists() and not force:
        raise ArtifactError(f"Triton model {final} already exists; pass --force to replace it")
    write_model_repository(engine_dir, target, repo, engine_model, release=release, force=force)
    with atomic_dir(final, force=force) as tmp:
        (tmp / "config.pbtxt").write_text(config)
        (tmp / "1").mkdir()
        (tmp / "1" / "model.py").write_text(MODEL_PY)
        shutil.copytree(tokenizer, tmp / "1" / TOKENIZER_DIR)
    return final
