from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import PretrainedConfig

from model_owner_server.tiny_models import TINY_MODELS, tiny_model
from shared.blocks import UnsupportedModelError, attention_module, find_block_stack, first_norm, num_layers

EXPECTED_PATHS = {
    "tiny-llama": "model.layers",
    "tiny-qwen2": "model.layers",
    "tiny-gpt2": "transformer.h",
    "tiny-opt": "model.decoder.layers",
}


@pytest.mark.parametrize("name", TINY_MODELS)
def test_resolver_finds_the_decoder_stack_of_each_family(name: str) -> None:
    model = tiny_model(name)
    stack = find_block_stack(model)
    assert stack.path == EXPECTED_PATHS[name]
    assert len(stack) == num_layers(model.config) == 8
    block = stack.blocks[0]
    assert "attention" in type(attention_module(block)).__name__.lower()
    assert "norm" in type(first_norm(block)).__name__.lower()


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
