"""The privacy-utility frontier: the recommendation rule, the Pareto front and the recommend command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from benchmarks.offsite_tuning.frontier import default_label, frontier_result, grid_variants, pareto
from model_owner_server.cli import app
from model_owner_server.recommendation.frontier_file import FrontierFile, load_frontier, parse_frontier
from model_owner_server.recommendation.rule import NoRecommendationError, recommend, recommended_point


def _point(method: str, alpha: float, beta: float, privacy: tuple[float, float, float],
           utility: tuple[float, float, float]) -> dict[str, Any]:
    return {"variant": f"{method} (alpha {alpha:g}, beta {beta:g})", "method": method, "alpha": alpha, "beta": beta,
            "privacy_gap": {"mean": privacy[0], "ci95": [privacy[1], privacy[2]]},
            "utility_gap": {"mean": utility[0], "ci95": [utility[1], utility[2]]},
            "plug_in": {"mean": 70.0}, "emulator_fine_tuned": {"mean": 60.0}, "plug_in_vs_uniform": None,
            "emulator_ppl": 100.0}


POINTS = [
    _point("uniform", 0.5, 0.0, (9.0, 6.0, 12.0), (0.5, -1.0, 2.0)),  # never recommended: not ScaleOT
    _point("scaleot", 0.25, 0.0, (1.0, -1.0, 3.0), (0.2, -1.0, 1.4)),  # CI crosses 0: never eligible
    _point("scaleot", 0.25, 0.5, (3.5, 1.0, 6.0), (2.0, 0.5, 3.5)),
    _point("scaleot", 0.5, 0.0, (4.0, 2.5, 5.5), (1.0, -0.5, 2.5)),
    _point("scaleot", 0.5, 0.5, (7.0, 5.0, 9.0), (4.0, 2.0, 6.0)),
    _point("scaleot", 0.75, 0.25, (6.0, 3.0, 9.0), (6.0, 4.0, 8.0)),  # dominated by (0.5, 0.5)
]
FRONTIER_JSON = {"benchmark": "frontier", "points": POINTS}
FRONTIER = FrontierFile.model_validate(FRONTIER_JSON)


def test_recommend_takes_the_least_utility_gap_that_reaches_the_target() -> None:
    assert recommend(FRONTIER, 3.0) == (0.5, 0.0)  # 4.0 >= 3 with the least utility gap (1.0)
    assert recommend(FRONTIER, 4.5) == (0.5, 0.5)
    assert recommend(FRONTIER, 0.0) == (0.5, 0.0)  # (0.25, 0) has the least utility gap but its CI crosses 0
    with pytest.raises(NoRecommendationError, match=r"largest is \+7.0"):
        recommend(FRONTIER, 8.0)  # uniform reaches 9 but is not the method recommended


def test_conservative_recommendation_needs_the_lower_bound_to_reach_the_target() -> None:
    assert recommended_point(FRONTIER, 3.0, conservative=True).beta == 0.5  # 2.5 < 3 <= 5.0
    with pytest.raises(NoRecommendationError):
        recommended_point(FRONTIER, 6.0, conservative=True)


def test_ties_go_to_the_larger_privacy_gap_then_the_larger_alpha() -> None:
    tied = [_point("scaleot", 0.25, 0.0, (5.0, 1.0, 9.0), (1.0, 0.0, 2.0)),
            _point("scaleot", 0.5, 0.0, (5.0, 1.0, 9.0), (1.0, 0.0, 2.0)),
            _point("scaleot", 0.75, 0.0, (4.0, 1.0, 9.0), (1.0, 0.0, 2.0))]
    assert recommend(FrontierFile.model_validate({"benchmark": "frontier", "points": tied}), 3.0) == (0.5, 0.0)


def test_pareto_front_drops_dominated_points() -> None:
    front = pareto([p for p in POINTS if p["method"] == "scaleot"])
    assert "scaleot (alpha 0.75, beta 0.25)" not in front
    assert {"scaleot (alpha 0.25, beta 0)", "scaleot (alpha 0.5, beta 0)", "scaleot (alpha 0.5, beta 0.5)"} <= set(
        front)


def test_grid_has_uniform_references_and_every_scaleot_point() -> None:
    variants = grid_variants((0.25, 0.5, 0.75), (0.0, 0.25, 0.5, 0.75))
    assert len(variants) == 3 + 12
    assert [v.method for v in variants[:3]] == ["uniform"] * 3 and {v.beta for v in variants[:3]} == {0.0}


def test_default_label_names_tasks_other_than_the_default_one() -> None:
    assert default_label("smollm2-135m", ["bbc_news"], False, "") == "smollm2-135m"  # the committed frontier's name
    assert default_label("smollm2-135m", ["goal_step_wikihow_step"], True, "-adapter0+4") == (
        "smollm2-135m-goal_step_wikihow_step-quick-adapter0+4")
    assert default_label("m", ["bbc_news", "goal_step_wikihow_goal"], False, "") == "m-bbc_news+goal_step_wikihow_goal"


def test_frontier_result_lists_recommendations(tmp_path: Path) -> None:
    raw = {"model": "m", "profile_id": "p", "budget": {}, "tasks": [{"task": "bbc_news"}], "seconds": 1.0,
           "summary": POINTS}
    result = frontier_result(raw)
    by_target = {r["target_privacy_gap"]: r for r in result["recommendations"]}
    assert (by_target[3.0]["alpha"], by_target[3.0]["beta"]) == (0.5, 0.0)
    assert by_target[8.0]["alpha"] is None and "largest" in by_target[8.0]["reason"]
    path = tmp_path / "frontier-m.json"
    path.write_text(json.dumps(result))
    assert load_frontier(path).model_dump(mode="json")["points"] == result["points"]  # every column kept
    (tmp_path / "other.json").write_text(json.dumps({"benchmark": "paper-table"}))
    with pytest.raises(ValueError, match="not a frontier"):
        load_frontier(tmp_path / "other.json")


def test_recommend_command(tmp_path: Path) -> None:
    path = tmp_path / "frontier.json"
    path.write_text(json.dumps(FRONTIER_JSON))
    runner = CliRunner()
    ok = runner.invoke(app, ["emulators", "recommend", "--frontier", str(path), "--privacy-gap", "3"])
    assert ok.exit_code == 0, ok.output
    assert "alpha 0.5, beta 0:" in ok.output and "--alpha 0.5 --beta 0" in ok.output
    as_json = runner.invoke(app, ["emulators", "recommend", "--frontier", str(path), "--privacy-gap", "4.5", "--json"])
    assert json.loads(as_json.output)["beta"] == 0.5
    none = runner.invoke(app, ["emulators", "recommend", "--frontier", str(path), "--privacy-gap", "20"])
    assert none.exit_code == 1 and "no measured scaleot point" in none.output
    missing = runner.invoke(app, ["emulators", "recommend", "--frontier", str(tmp_path / "x.json"),
                                  "--privacy-gap", "3"])
    assert missing.exit_code == 2 and "no frontier" in missing.output


def test_the_recommendation_says_it_was_read_off_its_own_test_items() -> None:
    from model_owner_server.recommendation.rule import selection_caveat

    one = selection_caveat(parse_frontier({**FRONTIER_JSON, "tasks": ["bbc_news"], "budget": {"seeds": [0]}}))
    assert "bbc_news; 1 tuning seed)" in one and "in-sample pick, not a fresh test" in one
    two = selection_caveat(parse_frontier({"benchmark": "paper-table", "tasks": [{"task": "a"}, {"task": "b"}],
                                           "summary": [], "budget": {"seeds": [0, 1]}}))
    assert "(a, b; 2 tuning seeds)" in two
    assert "the frontier's tuning seeds" in selection_caveat(FRONTIER)


def test_the_schema_refuses_what_the_rule_cannot_read() -> None:
    for bad, message in [({"benchmark": "frontier", "points": [{"alpha": "x"}]}, "points.0.method: Field required"),
                         ({**FRONTIER_JSON, "points": [{**POINTS[1], "alpha": "0.5"}]}, "points.0.alpha"),
                         ({**FRONTIER_JSON, "points": [{**POINTS[1], "beta": float("nan")}]}, "points.0.beta"),
                         ({**FRONTIER_JSON, "tasks": None}, "tasks: Input should be a valid list"),
                         ({**FRONTIER_JSON, "adapter": {"bottom": True, "top": 2}}, "adapter.bottom"),
                         ({"benchmark": "other"}, "is not a frontier result")]:
        with pytest.raises(ValueError, match=message):
            parse_frontier(bad)
    assert parse_frontier(FRONTIER_JSON).adapter.bottom == 2  # a file from before the split was recorded
