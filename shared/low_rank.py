"""Low-rank linear layer: the storage form of a Selective-Rank-Compressed projection.

y = B (A x) + bias, with A: (rank, in_features) and B: (out_features, rank). The two factors are
stored, never their product, so the dense original weight is not in the artifact.
"""

from __future__ import annotations

import torch
from torch import nn


class LowRankLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.rank = rank
        self.A = nn.Parameter(torch.empty(rank, in_features))
        self.B = nn.Parameter(torch.empty(out_features, rank))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.linear(nn.functional.linear(x, self.A), self.B)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, rank={self.rank}, bias={self.bias is not None}"


def linear_weight(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight as (out, in), bias) of an nn.Linear or a GPT-2 style Conv1D (stored as (in, out))."""
    weight, bias = module.weight, module.bias
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{type(module).__name__} has no weight tensor")
    detached_bias = bias.detach() if isinstance(bias, torch.Tensor) else None
    if isinstance(module, nn.Linear):
        return weight.detach(), detached_bias
    if type(module).__name__ == "Conv1D":
        return weight.detach().t(), detached_bias
    raise TypeError(f"not a linear projection: {type(module).__name__}")


def is_projection(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"
