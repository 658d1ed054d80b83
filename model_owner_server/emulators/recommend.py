"""Which (alpha, beta) a model owner should ship for a wanted privacy gap, read off a measured frontier.

The rule (docs/method-notes.md, "Privacy as a dial"):
1. Candidates: the frontier's points of the method (ScaleOT by default) whose mean privacy gap
   (plug-in - emulator fine-tuned, points, mean over the frontier's tasks) reaches the target AND
   whose 95% CI lies above 0, so the emulator is measurably worse than the plug-in. With
   `conservative`, the CI's lower end itself must reach the target.
2. Among them, the smallest mean utility gap (adapter-only tuning on the full model - plug-in):
   the data owner loses least. Ties: the larger privacy gap, then the larger alpha (fewer of the
   owner's original blocks leave the house, and the emulator is cheaper to tune), then the
   smaller beta.
3. No candidate: no measured point gives that privacy; `NoRecommendationError` says the largest
   privacy gap measured, so the owner can lower the target or measure a larger alpha / beta.
Pure: reads only the frontier JSON (`frontier.run`'s result) or a paper-table JSON, no model, no torch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


class NoRecommendationError(ValueError):
    """No measured (alpha, beta) reaches the wanted privacy gap."""


def _eligible(point: dict[str, Any], target: float, conservative: bool) -> bool:
    gap = point.get("privacy_gap")
    if not gap or point.get("utility_gap") is None:
        return False
    lo = float(gap["ci95"][0])
    return lo > 0 and (lo if conservative else float(gap["mean"])) >= target


def recommended_point(frontier: dict[str, Any], target_privacy_gap: float, method: str = "scaleot",
                      conservative: bool = False) -> dict[str, Any]:
    """The frontier point the rule picks (see the module docstring)."""
    points = [p for p in frontier.get("points", []) if p.get("method") == method]
    if not points:
        raise NoRecommendationError(f"the frontier has no {method} points")
    candidates = [p for p in points if _eligible(p, target_privacy_gap, conservative)]
    if not candidates:
        best = max(points, key=lambda p: p["privacy_gap"]["mean"] if p.get("privacy_gap") else float("-inf"))
        gap = best.get("privacy_gap") or {"mean": float("nan"), "ci95": [float("nan")] * 2}
        raise NoRecommendationError(
            f"no measured {method} point reaches a privacy gap of {target_privacy_gap:g} points with its 95% CI "
            f"above 0; the largest is {gap['mean']:+.1f} [{gap['ci95'][0]:+.1f}, {gap['ci95'][1]:+.1f}] at "
            f"alpha {best['alpha']:g}, beta {best['beta']:g}")
    return min(candidates, key=lambda p: (p["utility_gap"]["mean"], -p["privacy_gap"]["mean"], -p["alpha"], p["beta"]))


def selection_caveat(frontier: dict[str, Any]) -> str:
    """What the pick is worth as evidence: the rule chooses among points measured on the frontier's own test
    items, so its gaps are read off the items it was chosen on (an in-sample pick, optimistic by selection)."""
    raw = frontier.get("budget")
    budget: dict[str, Any] = raw if isinstance(raw, dict) else {}
    seeds = budget.get("seeds") if isinstance(budget.get("seeds"), list) else None
    seed_text = (f"{len(seeds)} tuning seed{'s' if len(seeds) != 1 else ''}" if seeds is not None
                 else "the frontier's tuning seeds")
    tasks = frontier.get("tasks") or []
    where = ", ".join(str(t) for t in tasks) or "the frontier's tasks"
    return (f"chosen among the measured points on the same test items its gaps were measured on ({where}; "
            f"{seed_text}): an in-sample pick, not a fresh test; expect the gaps of a fresh measurement to be "
            "somewhat less favourable")


def recommend(frontier_result: dict[str, Any], target_privacy_gap: float) -> tuple[float, float]:
    """(alpha, beta) of the ScaleOT point with the least utility gap whose privacy gap reaches the target."""
    point = recommended_point(frontier_result, target_privacy_gap)
    return float(point["alpha"]), float(point["beta"])


def _is_number(value: Any) -> bool:
    """A finite number (json.loads accepts NaN, Infinity and 1e400, which would break the ordering)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_gap(gap: Any) -> bool:
    """None (a point whose tuning failed) or {"mean": x, "ci95": [lo, hi]}."""
    return gap is None or (isinstance(gap, dict) and _is_number(gap.get("mean")) and isinstance(gap.get("ci95"), list)
                           and len(gap["ci95"]) == 2 and all(_is_number(x) for x in gap["ci95"]))


def adapter_split(frontier: dict[str, Any]) -> tuple[int, int]:
    """(bottom, top) adapter blocks the frontier was measured with (2 + 2 when it predates the record)."""
    adapter = frontier.get("adapter") or {"bottom": 2, "top": 2}
    return int(adapter["bottom"]), int(adapter["top"])


def as_frontier(paper_table: dict[str, Any]) -> dict[str, Any]:
    """A paper-table result read as a frontier: its summary entries are points of the same shape, measured
    on more tasks. Only variants that reached every task of the run are points (a mean over fewer tasks
    would not compare with the others)."""
    raw = paper_table.get("tasks")  # not a list: left as it is, for load_frontier's check to refuse
    tasks = [t.get("task") if isinstance(t, dict) else t for t in raw] if isinstance(raw, list) else raw
    summary = paper_table.get("summary")
    n_tasks = len(tasks) if isinstance(tasks, list) else None
    points = [s for s in summary if isinstance(s, dict) and s.get("n_tasks", n_tasks) == n_tasks] \
        if isinstance(summary, list) else None
    return {"benchmark": "frontier", "source": "paper-table", "model": paper_table.get("model"),
            "profile_id": paper_table.get("profile_id"), "adapter": paper_table.get("adapter"),
            "budget": paper_table.get("budget"),
            "tasks": tasks, "points": points}


def load_frontier(path: Path) -> dict[str, Any]:
    """A frontier JSON, or a paper-table JSON read as one (`as_frontier`); ValueError (one line) for
    anything else. FileNotFoundError when it is missing."""
    not_frontier = f"{path} is not a frontier result (scaleot-server bench frontier or bench paper-table writes one)"
    try:
        data = json.loads(Path(path).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(not_frontier) from None
    if isinstance(data, dict) and data.get("benchmark") == "paper-table":
        data = as_frontier(data)
    if not isinstance(data, dict) or data.get("benchmark") != "frontier" or not isinstance(data.get("points"), list):
        raise ValueError(not_frontier)
    for point in data["points"]:
        plug_in = point.get("plug_in") if isinstance(point, dict) else None
        if not (isinstance(point, dict) and _is_number(point.get("alpha")) and _is_number(point.get("beta"))
                and all(_is_gap(point.get(k)) for k in ("privacy_gap", "utility_gap"))
                and (plug_in is None or (isinstance(plug_in, dict) and _is_number(plug_in.get("mean"))))):
            raise ValueError(f"{not_frontier}: a point without finite alpha, beta and gaps ({str(point)[:80]})")
    tasks, adapter = data.get("tasks", []), data.get("adapter")
    if not (isinstance(tasks, list) and all(isinstance(t, str) for t in tasks)):
        raise ValueError(f"{not_frontier}: `tasks` is not a list of task names")
    if adapter is not None and not (isinstance(adapter, dict) and all(
            isinstance(adapter.get(k), int) and not isinstance(adapter.get(k), bool) and 0 <= adapter[k] <= 1024
            for k in ("bottom", "top"))):
        raise ValueError(f"{not_frontier}: `adapter` is not {{\"bottom\": B, \"top\": T}}")
    return data
