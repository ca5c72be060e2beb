import pytest

from sq_trt.errors import ModelLoadError, UnsupportedArchitectureError
from sq_trt.models.loading import load_model, weights_fingerprint
from sq_trt.models.tiny import tiny_model


def test_tiny_model_loads_with_tokenizer():
    loaded = load_model("tiny:llama")
    assert loaded.spec.family == "llama"
    assert loaded.tokenizer("hi", add_special_tokens=False)["input_ids"] == [ord("h"), ord("i")] or len(
        loaded.tokenizer("hi", add_special_tokens=False)["input_ids"]
    ) == 2


def test_fingerprint_changes_with_weights():
    a, b = tiny_model("gpt2"), tiny_model("gpt2")
    assert weights_fingerprint(a) == weights_fingerprint(b)  # same seed, same weights
    first = next(b.parameters())
    first.data[0, 0] += 1.0
    assert weights_fingerprint(a) != weights_fingerprint(b)


def test_missing_paths_are_named(tmp_path):
    with pytest.raises(ModelLoadError, match="/no/such/dir"):
        load_model("/no/such/dir")
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(tmp_path))
    (tmp_path / "m.gguf").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="pass that file"):
        load_model(str(tmp_path))
    (tmp_path / "w.bin").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="not a .gguf"):
        load_model(str(tmp_path / "w.bin"))
    with pytest.raises(ModelLoadError, match="no tiny model"):
        load_model("tiny:t5")
    with pytest.raises(ModelLoadError, match="dtype"):
        load_model("tiny:llama", dtype="int4")


def test_saved_model_round_trip_and_unsupported_architecture(tmp_path):
    import transformers

    model = tiny_model("opt")
    model.save_pretrained(tmp_path / "opt")
    loaded = load_model(str(tmp_path / "opt"), local_files_only=True)
    assert weights_fingerprint(loaded.model) == weights_fingerprint(model)
    # An architecture outside the registry is refused before its weights load.
    t5 = transformers.T5ForConditionalGeneration(
        transformers.T5Config(d_model=32, num_layers=1, num_heads=2, d_ff=64, vocab_size=100, d_kv=16)
    )
    t5.save_pretrained(tmp_path / "t5")
    with pytest.raises(UnsupportedArchitectureError, match="'t5'"):
        load_model(str(tmp_path / "t5"))


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "opt", "gpt2", "bert"])
def test_tiny_positions_without_transformers_equal_the_built_config(family):
    from sq_trt.models.loading import max_positions, source_max_positions
    from sq_trt.models.tiny import tiny_config

    assert source_max_positions(f"tiny:{family}") == max_positions(tiny_config(family))
    assert source_max_positions("tiny:resnet") is None  # the load names the unknown family


@pytest.mark.parametrize("family", ["llama", "opt", "gpt2", "bert"])
def test_directory_positions_from_config_json_equal_transformers(tmp_path, family):
    import transformers

    from sq_trt.models.loading import max_positions, source_max_positions
    from sq_trt.models.tiny import tiny_config

    config = tiny_config(family)
    config.update({"n_positions" if family == "gpt2" else "max_position_embeddings": 777})
    config.save_pretrained(tmp_path)
    expected = max_positions(transformers.AutoConfig.from_pretrained(tmp_path))
    assert expected == 777
    assert source_max_positions(str(tmp_path)) == expected


def test_config_json_without_a_limit_falls_back_to_the_config_class_default(tmp_path):
    import json

    import transformers

    from sq_trt.models.loading import max_positions, source_max_positions

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    expected = max_positions(transformers.AutoConfig.from_pretrained(tmp_path))
    assert expected is not None
    assert source_max_positions(str(tmp_path)) == expected


@pytest.mark.parametrize(
    "content", [b"\xff\xfe junk", b"[1, 2]", b'{"max_position_embeddings": "many"', b"[" * 100_000]
)
def test_unreadable_config_json_gives_no_limit(tmp_path, content):
    from sq_trt.models.loading import source_max_positions

    (tmp_path / "config.json").write_bytes(content)
    assert source_max_positions(str(tmp_path)) is None  # load_model reports the file in its own words


def test_device_names_are_checked_without_torch():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from sq_trt.errors import ModelLoadError\n"
        "from sq_trt.models.loading import check_device, check_device_name\n"
        "check_device('cpu'); check_device('cpu:0')\n"
        "assert check_device_name('cuda:3') == ('cuda', 3) and check_device_name('mps') == ('mps', None)\n"
        "for bad in ('bogus', '', 'cuda:', 'cuda:-1', 'cuda:01', ' cpu', 'CPU', 'xpu'):\n"
        "    try:\n"
        "        check_device_name(bad)\n"
        "    except ModelLoadError as exc:\n"
        "        assert 'not a torch device' in str(exc), exc\n"
        "    else:\n"
        "        raise AssertionError(bad)\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_device_presence_is_still_checked_with_torch():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    from sq_trt.models.loading import check_device

    with pytest.raises(ModelLoadError, match="no CUDA GPU"):
        check_device("cuda:0")
