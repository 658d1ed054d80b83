"""The agreement study's pure parts: which points a result file holds, the threshold rule, Spearman's rho."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.offsite_tuning.agreement_study import StudyPoint, best_threshold, study_points
from benchmarks.reports.stats import Interval, spearman, spearman_interval


def _point(agreement: float, gap: float) -> StudyPoint:
    interval = Interval(mean=gap, ci95=(gap - 1, gap + 1))
    return StudyPoint(source="s", task="t", variant=f"v{agreement}", method="scaleot", alpha=0.5, beta=0.0,
                      utility_gap=interval, privacy_gap=interval, emulator_ppl=None, n_items=10,
                      agreement=agreement, mean_kl=1 - agreement)


def test_spearman_matches_known_values() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486832980505138)  # scipy.stats.spearmanr
    assert spearman([1, 1, 1], [1, 2, 3]) == 0.0
    rho = spearman_interval([0.1, 0.4, 0.5, 0.9, 0.95], [20, 12, 9, 1, 0])
    assert rho.mean == pytest.approx(-1.0) and rho.ci95[1] <= -0.5
    with pytest.raises(ValueError, match="at least 3"):
        spearman_interval([1, 2], [1, 2])


def test_threshold_separates_transferring_points() -> None:
    points = [_point(0.1, 20), _point(0.3, 15), _point(0.6, 2), _point(0.9, 0), _point(0.5, 8)]
    rule = best_threshold(points, transfers_below=5)
    assert rule.agreement == 0.6 and rule.balanced_accuracy == 1.0 and (rule.n_transfer, rule.n_fail) == (2, 3)
    mixed = best_threshold([*points, _point(0.95, 30)], transfers_below=5)
    assert mixed.agreement == 0.6 and mixed.balanced_accuracy == pytest.approx(0.875)


def test_study_points_reads_every_measured_task_and_variant(tmp_path: Path) -> None:
    gap = {"mean": 1.0, "ci95": [0.0, 2.0]}
    data = {"summary": [{"variant": "scaleot (alpha 0.5, beta 0)", "method": "scaleot", "alpha": 0.5, "beta": 0.0},
                        {"variant": "uniform (alpha 0.5, beta 0)", "method": "uniform", "alpha": 0.5, "beta": 0.0}],
            "task_intervals": {"a": {"scaleot (alpha 0.5, beta 0)": {"utility_gap": gap, "privacy_gap": gap},
                                     "uniform (alpha 0.5, beta 0)": {"utility_gap": gap, "privacy_gap": gap}},
                               "b": {"scaleot (alpha 0.5, beta 0)": {"privacy_gap": gap}}}}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    found = study_points([path])
    assert [(task, summary["method"]) for _, task, summary, _ in found] == [("a", "scaleot"), ("a", "uniform")]


def test_compare_runs_pairs_rows_over_shared_seeds(tmp_path: Path) -> None:
    from benchmarks.reports.compare_runs import compare

    def run(plug: list[str], seeds: list[int]) -> dict[str, object]:
        return {"benchmark": "transfer-split", "task": "t", "n_test": 4, "seeds": seeds,
                "rows": {"full_zero_shot": {"correct": ["0101"]}, "plug_in": {"correct": plug}},
                "agreement": {"agreement": 0.5}}

    (tmp_path / "a.json").write_text(json.dumps(run(["1111", "1100"], [0, 1])))
    (tmp_path / "b.json").write_text(json.dumps(run(["0000"], [0])))
    result = compare(tmp_path / "a.json", tmp_path / "b.json")
    rows = {r.row: r for r in result.rows}
    assert result.seeds == [0] and rows["plug_in"].a == 100.0 and rows["plug_in"].a_minus_b.mean == 100.0
    assert rows["full_zero_shot"].a_minus_b.mean == 0.0 and result.agreement == {"a": 0.5, "b": 0.5}
    (tmp_path / "c.json").write_text(json.dumps({**run(["0000"], [0]), "task": "other"}))
    with pytest.raises(ValueError, match="different tasks"):
        compare(tmp_path / "a.json", tmp_path / "c.json")
