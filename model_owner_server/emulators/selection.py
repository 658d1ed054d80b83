"""Which middle blocks an emulator keeps, replaces with harmonizers, or drops."""

from __future__ import annotations

import math


def round_half_up(x: float) -> int:
    """round() without banker's rounding: 0.25 * 26 = 6.5 -> 7, as the paper's round(alpha*M) means."""
    return math.floor(x + 0.5)


def middle_indices(num_layers: int, adapter_bottom: int, adapter_top: int) -> list[int]:
    return list(range(adapter_bottom, num_layers - adapter_top))


def n_replaced(num_middle: int, alpha: float) -> int:
    return round_half_up(alpha * num_middle)


def uniform_kept(middle: list[int], n_keep: int) -> list[int]:
    """Offsite-Tuning LayerDrop: n_keep evenly spaced blocks, first and last middle block kept."""
    m = len(middle)
    if n_keep <= 0:
        return []
    if n_keep == 1:
        return [middle[0]]
    if n_keep >= m:
        return list(middle)
    return sorted({middle[round_half_up(i * (m - 1) / (n_keep - 1))] for i in range(n_keep)})


def least_important(middle: list[int], importance: list[float], n: int) -> list[int]:
    """The n middle blocks with the lowest importance logits (ties broken by position)."""
    order = sorted(range(len(middle)), key=lambda i: (importance[i], i))
    return sorted(middle[i] for i in order[:n])
