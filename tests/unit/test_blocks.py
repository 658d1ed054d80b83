from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM, Olmo2Config, PretrainedConfig

from model_owner_server.tiny_models import TINY_MODELS, tiny_model
from shared.blocks import UnsupportedModelError, attention_module, find_block_stack, input_norm, num_layers

EXPECTED_PATHS = {
    "tiny-llama": "model.layers",
    "tiny-qwen2": "model.layers",
    "tiny-gpt2": "transformer.h",
    "tiny-opt": "model.decoder.layers",
    "tiny-gemma3": "model.layers",
    "tiny-qwen3": "model.layers",
}
INPUT_NORMS = {"tiny-gpt2": "ln_1", "tiny-opt": "self_attn_layer_norm"}  # others: input_layernorm


@pytest.mark.parametrize("name", TINY_MODELS)
def test_resolver_finds_the_decoder_stack_of_each_family(name: str) -> None:
    model = tiny_model(name)
    stack = find_block_stack(model)
    assert stack.path == EXPECTED_PATHS[name]
    assert len(stack) == num_layers(model.config) == 8
    block = stack.blocks[0]
    assert "attention" in type(attention_module(block)).__name__.lower()
    assert input_norm(block, 64) is getattr(block, INPUT_NORMS.get(name, "input_layernorm"))


@pytest.mark.parametrize("name", TINY_MODELS)
def test_input_norm_is_the_first_norm_applied_to_the_block_input(name: str) -> None:
    """Structurally: the norm found is the first normalisation the block runs, on the block's input
    (not q_norm/k_norm inside attention, which Gemma 3 and Qwen3 register first)."""
    model = tiny_model(name)
    block = find_block_stack(model).blocks[1]
    seen: dict[str, torch.Tensor] = {}
    calls: list[tuple[nn.Module, torch.Tensor]] = []

    def on_block(_: nn.Module, args: tuple[torch.Tensor, ...], kwargs: dict[str, torch.Tensor]) -> None:
        seen["input"] = args[0] if args else kwargs["hidden_states"]

    hooks = [block.register_forward_pre_hook(on_block, with_kwargs=True)]
    for module in block.modules():
        if module is not block and "norm" in type(module).__name__.lower():
            hooks.append(module.register_forward_pre_hook(lambda m, args: calls.append((m, args[0]))))
    with torch.no_grad():
        model(torch.randint(0, 250, (1, 6)))
    for hook in hooks:
        hook.remove()
    first, first_input = calls[0]
    assert first is input_norm(block, 64)
    assert torch.equal(first_input, seen["input"])


def test_post_norm_family_gets_its_hidden_width_norm() -> None:
    """OLMo 2 normalises after attention and inside it (q_norm over all heads): no input norm."""
    torch.manual_seed(0)
    config = Olmo2Config(vocab_size=260, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4)
    block = find_block_stack(AutoModelForCausalLM.from_config(config)).blocks[0]
    assert input_norm(block, 64) is block.post_attention_layernorm


class _NormInsideAttentionOnly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.self_attn = nn.Module()
        self.self_attn.q_norm = nn.RMSNorm(16)
        self.mlp = nn.Linear(64, 64)


def test_block_without_hidden_width_norm_is_unsupported() -> None:
    with pytest.raises(UnsupportedModelError, match="no input normalisation of width 64"):
        input_norm(_NormInsideAttentionOnly(), 64)
    wrong_width = _NormInsideAttentionOnly()
    wrong_width.input_layernorm = nn.LayerNorm(32)
    with pytest.raises(UnsupportedModelError):
        input_norm(wrong_width, 64)


class _NoStack(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.config = PretrainedConfig(num_hidden_layers=3)
        self.encoder = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))


def test_unsupported_architecture_gets_a_clear_error() -> None:
    with pytest.raises(UnsupportedModelError, match="could not find the decoder blocks"):
        find_block_stack(_NoStack())


def test_model_without_layer_count_is_rejected() -> None:
    with pytest.raises(UnsupportedModelError, match="declares no layer count"):
        num_layers(PretrainedConfig())


def test_heterogeneous_module_list_is_not_mistaken_for_blocks() -> None:
    model = _NoStack()
    model.mixed = nn.ModuleList([nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2)])  # type: ignore[assignment]
    with pytest.raises(UnsupportedModelError):
        find_block_stack(model)
    model.blocks = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])  # type: ignore[assignment]
    assert find_block_stack(model).path == "blocks"
    assert torch.is_tensor(model.blocks[0].weight)
