"""Paired bootstrap confidence intervals for accuracy differences (in points).

Every benchmark row keeps its per-item correctness (0/1 per test item) for every tuning seed. A
difference between two rows of the same task (privacy gap, utility gap, scaleot vs uniform) is then
a (seeds x items) array of per-item differences, paired by item and by seed: both rows saw the same
test items, and row A's seed-s run is compared with row B's seed-s run. A seed-independent row (a
zero-shot score) is broadcast over the seeds.

The bootstrap resamples, in each replicate, the seeds with replacement and the test items with
replacement (one shared item draw for all seeds, which keeps the item pairing), and takes the mean
difference. Across tasks, each task is resampled independently and the task means are averaged
(tasks are fixed, not sampled). The interval is the percentile interval of the replicates.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel

N_BOOT = 2000
CONFIDENCE = 0.95


class Interval(BaseModel):
    """A mean with its bootstrap percentile interval (JSON: {"mean", "ci95": [lo, hi]})."""

    mean: float
    ci95: tuple[float, float]

    @property
    def excludes_zero(self) -> bool:
        return self.ci95[0] > 0 or self.ci95[1] < 0


def as_matrix(rows: Sequence[Sequence[float]] | Sequence[str]) -> np.ndarray:
    """Per-seed correctness as a float (seeds x items) array; a seed may be a '0110...' string."""
    parsed = [[float(c) for c in r] if isinstance(r, str) else list(r) for r in rows]
    matrix = np.asarray(parsed, dtype=float)
    if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise ValueError(f"expected a non-empty (seeds x items) array, got shape {matrix.shape}")
    return matrix


def paired_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """100 * (a - b) per seed and item; a one-seed operand is broadcast over the other's seeds."""
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"paired rows need the same items: {a.shape[1]} vs {b.shape[1]}")
    if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
        raise ValueError(f"seed counts {a.shape[0]} and {b.shape[0]} cannot be paired")
    return 100.0 * (a - b)


def _replicates(diff: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    seeds, items = diff.shape
    seed_draw = rng.integers(0, seeds, size=(n_boot, seeds))
    item_draw = rng.integers(0, items, size=(n_boot, items))
    # mean over drawn seeds of the mean over drawn items: per-seed item sums first keeps memory at n_boot x seeds
    per_seed = np.stack([diff[s][item_draw].mean(axis=1) for s in range(seeds)], axis=1)  # (n_boot, seeds)
    return np.take_along_axis(per_seed, seed_draw, axis=1).mean(axis=1)


def bootstrap_mean(diffs: Sequence[np.ndarray], n_boot: int = N_BOOT, seed: int = 0,
                   confidence: float = CONFIDENCE) -> Interval:
    """Mean over tasks of each task's mean paired difference, with a percentile bootstrap interval.

    `diffs`: one (seeds x items) array of per-item differences per task (one task is a list of one).
    Deterministic given `seed`.
    """
    if not diffs:
        raise ValueError("no tasks to average")
    rng = np.random.default_rng(seed)
    replicates = np.mean([_replicates(np.asarray(d, dtype=float), n_boot, rng) for d in diffs], axis=0)
    mean = float(np.mean([np.asarray(d, dtype=float).mean() for d in diffs]))
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(replicates, [tail, 1 - tail])
    return Interval(mean=mean, ci95=(float(lo), float(hi)))


def correctness_string(correct: Sequence[int] | Sequence[bool]) -> str:
    """Compact JSON form of per-item correctness: '0110...'."""
    return "".join("1" if c else "0" for c in correct)


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), 0-based."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=float)
    ranks[order] = np.arange(len(values), dtype=float)
    for value in np.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Spearman's rank correlation (Pearson on average ranks); 0 when either side is constant."""
    rx, ry = _ranks(np.asarray(x, dtype=float)), _ranks(np.asarray(y, dtype=float))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = float(np.sqrt((rx**2).sum() * (ry**2).sum()))
    return float((rx * ry).sum() / denominator) if denominator else 0.0


def spearman_interval(x: Sequence[float], y: Sequence[float], n_boot: int = N_BOOT, seed: int = 0,
                      confidence: float = CONFIDENCE) -> Interval:
    """Spearman's rho with a percentile bootstrap interval over the (x, y) points (resampled in pairs)."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(xs) != len(ys) or len(xs) < 3:
        raise ValueError(f"need at least 3 paired points, got {len(xs)} and {len(ys)}")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(xs), size=(n_boot, len(xs)))
    replicates = np.array([spearman(xs[d], ys[d]) for d in draws])
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(replicates, [tail, 1 - tail])
    return Interval(mean=spearman(xs, ys), ci95=(float(lo), float(hi)))
