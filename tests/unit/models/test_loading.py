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
