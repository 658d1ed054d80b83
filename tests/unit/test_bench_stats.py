"""The paired bootstrap of the benchmarks: known answers on synthetic paired data."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.reports.stats import as_matrix, bootstrap_mean, correctness_string, paired_difference


def _paired(n: int, p_a: float, p_b: float, seeds: int, rng: np.random.Generator) -> np.ndarray:
    a = (rng.random((seeds, n)) < p_a).astype(float)
    b = (rng.random((seeds, n)) < p_b).astype(float)
    return paired_difference(a, b)


def test_interval_contains_the_truth_and_shrinks_with_n() -> None:
    rng = np.random.default_rng(1)
    truth = 100 * (0.7 - 0.6)
    small = bootstrap_mean([_paired(300, 0.7, 0.6, 2, rng)])
    large = bootstrap_mean([_paired(12_000, 0.7, 0.6, 2, rng)])
    for interval in (small, large):
        assert interval.ci95[0] < truth < interval.ci95[1]
        assert interval.ci95[0] <= interval.mean <= interval.ci95[1]
    width = lambda i: i.ci95[1] - i.ci95[0]  # noqa: E731
    assert width(large) < 0.3 * width(small)  # sqrt(300 / 12000) = 0.16 in theory


def test_coverage_is_close_to_95_percent() -> None:
    rng = np.random.default_rng(7)
    truth = 100 * (0.55 - 0.45)
    hits = [bootstrap_mean([_paired(200, 0.55, 0.45, 2, rng)], n_boot=400, seed=s).ci95 for s in range(120)]
    coverage = np.mean([lo < truth < hi for lo, hi in hits])
    assert 0.85 <= coverage <= 1.0


def test_pairing_makes_correlated_rows_precise() -> None:
    """Two rows that differ on a few items only: the paired interval is far narrower than the rows' own
    standard errors would suggest (an unpaired comparison could not decide this difference)."""
    rng = np.random.default_rng(3)
    a = (rng.random((2, 400)) < 0.6).astype(float)
    b = a.copy()
    b[:, :20] = 0  # b loses the first 20 items' correct answers: a - b >= 0 everywhere
    a[:, :20] = 1
    interval = bootstrap_mean([paired_difference(a, b)])
    assert interval.mean == pytest.approx(5.0)
    unpaired_se = 100 * np.sqrt(2 * 0.6 * 0.4 / 800)
    assert interval.ci95[0] > 0
    assert interval.ci95[1] - interval.ci95[0] < 2 * 1.96 * unpaired_se / 2


def test_constant_differences_and_task_average() -> None:
    two = np.full((2, 50), 2.0)
    six = np.full((1, 80), 6.0)
    interval = bootstrap_mean([two, six])
    assert interval.mean == pytest.approx(4.0)
    assert interval.ci95 == pytest.approx((4.0, 4.0))


def test_seed_resampling_widens_the_interval_when_seeds_disagree() -> None:
    same_items = np.zeros((2, 200))
    same_items[0] = 10.0  # seed 0 says +10 on every item, seed 1 says 0
    interval = bootstrap_mean([same_items])
    assert interval.mean == pytest.approx(5.0)
    assert interval.ci95[0] == pytest.approx(0.0) and interval.ci95[1] == pytest.approx(10.0)


def test_one_seed_rows_broadcast_and_mismatches_are_refused() -> None:
    a = as_matrix(["1100", "1010"])
    zero_shot = as_matrix(["0000"])
    assert paired_difference(a, zero_shot).tolist() == [[100, 100, 0, 0], [100, 0, 100, 0]]
    with pytest.raises(ValueError, match="same items"):
        paired_difference(a, as_matrix(["000"]))
    with pytest.raises(ValueError, match="cannot be paired"):
        paired_difference(as_matrix(["1", "0", "1"]), as_matrix(["1", "0"]))
    with pytest.raises(ValueError):
        bootstrap_mean([])


def test_correctness_string_round_trip() -> None:
    assert correctness_string([1, 0, True, False]) == "1010"
    assert as_matrix([correctness_string([1, 0, 1])]).tolist() == [[1.0, 0.0, 1.0]]


def test_bootstrap_is_deterministic_given_its_seed() -> None:
    diff = _paired(100, 0.5, 0.4, 2, np.random.default_rng(0))
    assert bootstrap_mean([diff], seed=5) == bootstrap_mean([diff], seed=5)
