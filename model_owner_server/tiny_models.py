"""Tiny randomly initialised causal LMs of several families, built in code, for fast tests.

Each has a handful of blocks and hidden size 64, a byte-level tokenizer built here, and a fixed
seed, so the same name always gives the same weights (and the same weights hash). `tiny-gemma3` and
`tiny-qwen3` normalise queries and keys inside attention (`q_norm`/`k_norm`, head width), and
`tiny-gemma3` alternates sliding-window and full attention as Gemma 3 does (window 16 tokens).
"""

from __future__ import annotations

from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    LlamaConfig,
    OPTConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
)

VOCAB = 260  # 256 bytes + specials
TINY_LAYERS = 8
TINY_SLIDING_WINDOW = 16
# Gemma 3 alternates five sliding-window blocks with one full-attention block; here two with one, so
# the adapter and the middle blocks each hold both kinds.
GEMMA3_LAYER_TYPES = ["sliding_attention", "sliding_attention", "full_attention"] * 2 + [
    "sliding_attention", "full_attention"]


def _configs() -> dict[str, PretrainedConfig]:
    common: dict[str, Any] = {"vocab_size": VOCAB, "bos_token_id": 256, "eos_token_id": 257, "pad_token_id": 258}
    return {
        "tiny-llama": LlamaConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=TINY_LAYERS,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            tie_word_embeddings=True,
            **common,
        ),
        "tiny-qwen2": Qwen2Config(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=TINY_LAYERS,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            **common,
        ),
        "tiny-gpt2": GPT2Config(
            n_embd=64,
            n_layer=TINY_LAYERS,
            n_head=4,
            n_positions=512,
            **common,
        ),
        "tiny-opt": OPTConfig(
            hidden_size=64,
            ffn_dim=128,
            num_hidden_layers=TINY_LAYERS,
            num_attention_heads=4,
            max_position_embeddings=512,
            word_embed_proj_dim=64,
            **common,
        ),
        "tiny-gemma3": Gemma3TextConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=TINY_LAYERS,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            query_pre_attn_scalar=16,
            sliding_window=TINY_SLIDING_WINDOW,
            layer_types=GEMMA3_LAYER_TYPES,
            max_position_embeddings=512,
            **common,
        ),
        "tiny-qwen3": Qwen3Config(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=TINY_LAYERS,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            max_position_embeddings=512,
            **common,
        ),
    }


TINY_MODELS = tuple(_configs())


def tiny_model(name: str, seed: int = 0) -> PreTrainedModel:
    configs = _configs()
    if name not in configs:
        raise KeyError(f"unknown tiny model {name!r}; choose one of {', '.join(configs)}")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(configs[name], dtype=torch.float32)
    return model.eval()


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (one token per byte) that needs no files."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    for i, special in enumerate(["<s>", "</s>", "<pad>", "<unk>"]):
        vocab[special] = 256 + i
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
