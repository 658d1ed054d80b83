"""Selective Rank Compression: truncated SVD of the attention projections of kept middle blocks."""

from __future__ import annotations

import torch

from model_owner_server.emulators.selection import round_half_up
from shared.low_rank import linear_weight


def src_rank(out_features: int, in_features: int, beta: float) -> int:
    """Singular values kept when a fraction beta of the rank is removed."""
    return max(1, round_half_up((1.0 - beta) * min(out_features, in_features)))


def low_rank_factors(module: torch.nn.Module, rank: int) -> dict[str, torch.Tensor]:
    """`A` (rank, in), `B` (out, rank) and `bias` with B @ A the best rank-`rank` approximation."""
    weight, bias = linear_weight(module)
    u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)
    root = s[:rank].sqrt()
    factors = {
        "A": (root[:, None] * vh[:rank]).to(weight.dtype).contiguous(),
        "B": (u[:, :rank] * root[None, :]).to(weight.dtype).contiguous(),
    }
    if bias is not None:
        factors["bias"] = bias.clone()
    return factors
