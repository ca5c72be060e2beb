"""Tiny random-weight models of each registered family, built from configs (no downloads).

Used by the unit tests and by ``--model tiny:<family>`` for dry runs of the
whole pipeline in seconds. The tokenizer is byte-level with no merges (256
tokens), built in memory.
"""

from __future__ import annotations

from typing import Any

from sq_trt.errors import ModelLoadError

TINY_FAMILIES = ("llama", "mistral", "qwen2", "opt", "gpt2", "bert")
# Every tiny config's position limit, known without building the config (which imports transformers).
TINY_MAX_POSITIONS = 512


def byte_tokenizer() -> Any:
    """A 256-token byte-level tokenizer (``PreTrainedTokenizerFast``), built in memory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=None)


def tiny_max_positions(family: str) -> int:
    """The position limit of ``family``'s tiny config (what :func:`tiny_config` states), without transformers.

    Raises:
        ModelLoadError: An unknown family (as :func:`tiny_config`).
    """
    _check_family(family)
    return TINY_MAX_POSITIONS


def _check_family(family: str) -> None:
    if family not in TINY_FAMILIES:
        raise ModelLoadError(f"no tiny model for family {family!r}; choose one of {', '.join(TINY_FAMILIES)}")


def tiny_config(family: str) -> Any:
    """A small config of ``family`` (hidden 64, 2 layers, vocab 256)."""
    import transformers as tf

    common: dict[str, Any] = {"vocab_size": 256}
    if family in ("llama", "mistral", "qwen2"):
        cls = {"llama": tf.LlamaConfig, "mistral": tf.MistralConfig, "qwen2": tf.Qwen2Config}[family]
        return cls(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=TINY_MAX_POSITIONS,
            tie_word_embeddings=False,
            **common,
        )
    if family == "opt":
        return tf.OPTConfig(
            hidden_size=64,
            ffn_dim=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=TINY_MAX_POSITIONS,
            word_embed_proj_dim=64,
            **common,
        )
    if family == "gpt2":
        return tf.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=TINY_MAX_POSITIONS, **common)
    if family == "bert":
        return tf.BertConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=TINY_MAX_POSITIONS,
            **common,
        )
    _check_family(family)
    raise AssertionError(f"TINY_FAMILIES names {family!r} but tiny_config has no branch for it")


def tiny_model(family: str, seed: int = 0) -> Any:
    """A tiny random-weight model of ``family`` in eval mode (fp32).

    Decoders are ``AutoModelForCausalLM``; BERT is ``BertModel`` (an encoder).
    Weights get a few large input channels so smoothing has outliers to move.
    """
    import torch
    import transformers as tf

    config = tiny_config(family)
    torch.manual_seed(seed)
    if family == "bert":
        model = tf.BertModel(config)
    else:
        model = tf.AutoModelForCausalLM.from_config(config)
    # Random init has no activation outliers; scale a few norm channels so the
    # smoothing maths is exercised on realistic (outlier) inputs.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 1 and ("norm" in name.lower() or "ln_" in name) and name.endswith("weight"):
                param.mul_(1.0 + torch.rand_like(param))
                param[:: max(1, param.numel() // 4)] *= 8.0
    model.eval()
    return model
