"""The harmonizer: a lightweight residual block that stands in for one original decoder block.

    h -> h + W_up(act(W_down(norm(h))))

`W_up` starts at zero, so an untrained harmonizer is the identity and an emulator of untrained
harmonizers equals plain LayerDrop. It accepts the decoder-block call signature (masks, positions,
cache, ...) and ignores everything but the hidden states, so it never touches the KV cache and the
emulator stays an ordinary transformers model.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from pydantic import BaseModel, Field
from torch import nn
from transformers.activations import ACT2FN

from shared.blocks import input_norm


class HarmonizerConfig(BaseModel):
    rank: int = Field(64, ge=1, description="bottleneck width r_h of W_down / W_up")
    activation: str = Field("silu", description="activation of the base model's family (ACT2FN name)")


class Harmonizer(nn.Module):
    def __init__(self, hidden_size: int, config: HarmonizerConfig, norm: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.norm = norm
        self.down = nn.Linear(hidden_size, config.rank, bias=False)
        self.act = ACT2FN[config.activation]
        self.up = nn.Linear(config.rank, hidden_size, bias=False)
        nn.init.zeros_(self.up.weight)

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return hidden_states + self.up(self.act(self.down(self.norm(hidden_states))))

    @classmethod
    def for_block(cls, block: nn.Module, hidden_size: int, config: HarmonizerConfig,
                  dtype: torch.dtype | None = None) -> Harmonizer:
        """A harmonizer for `block`: its norm starts as a copy of the block's input norm. In the block's
        dtype unless `dtype` says otherwise (stage 1 trains float32 harmonizers over a half-precision base)."""
        norm = copy.deepcopy(input_norm(block, hidden_size))
        for p in norm.parameters():
            p.requires_grad_(True)
        harmonizer = cls(hidden_size, config, norm)
        ref = next(block.parameters())
        return harmonizer.to(device=ref.device, dtype=dtype or ref.dtype)
