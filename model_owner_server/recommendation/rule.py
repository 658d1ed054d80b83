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
Pure: reads only a `FrontierFile`, no model, no torch.
"""

from __future__ import annotations

from model_owner_server.recommendation.frontier_file import FrontierFile, FrontierPoint


class NoRecommendationError(ValueError):
    """No measured (alpha, beta) reaches the wanted privacy gap."""


def _eligible(point: FrontierPoint, target: float, conservative: bool) -> bool:
    gap = point.privacy_gap
    if gap is None or point.utility_gap is None:
        return False
    lo = gap.ci95[0]
    return lo > 0 and (lo if conservative else gap.mean) >= target


def recommended_point(frontier: FrontierFile, target_privacy_gap: float, method: str = "scaleot",
                      conservative: bool = False) -> FrontierPoint:
    """The frontier point the rule picks (see the module docstring)."""
    points = [p for p in frontier.points if p.method == method]
    if not points:
        raise NoRecommendationError(f"the frontier has no {method} points")
    candidates = [p for p in points if _eligible(p, target_privacy_gap, conservative)]
    if not candidates:
        best = max(points, key=lambda p: p.privacy_gap.mean if p.privacy_gap else float("-inf"))
        gap = best.privacy_gap
        shown = "n/a" if gap is None else f"{gap.mean:+.1f} [{gap.ci95[0]:+.1f}, {gap.ci95[1]:+.1f}]"
        raise NoRecommendationError(
            f"no measured {method} point reaches a privacy gap of {target_privacy_gap:g} points with its 95% CI "
            f"above 0; the largest is {shown} at alpha {best.alpha:g}, beta {best.beta:g}")
    return min(candidates, key=lambda p: (p.utility_gap.mean if p.utility_gap else 0.0,
                                          -(p.privacy_gap.mean if p.privacy_gap else 0.0), -p.alpha, p.beta))


def recommend(frontier: FrontierFile, target_privacy_gap: float) -> tuple[float, float]:
    """(alpha, beta) of the ScaleOT point with the least utility gap whose privacy gap reaches the target."""
    point = recommended_point(frontier, target_privacy_gap)
    return point.alpha, point.beta


def selection_caveat(frontier: FrontierFile) -> str:
    """What the pick is worth as evidence: the rule chooses among points measured on the frontier's own test
    items, so its gaps are read off the items it was chosen on (an in-sample pick, optimistic by selection)."""
    seeds = (frontier.budget or {}).get("seeds")
    seed_text = (f"{len(seeds)} tuning seed{'s' if len(seeds) != 1 else ''}" if isinstance(seeds, list)
                 else "the frontier's tuning seeds")
    where = ", ".join(frontier.tasks) or "the frontier's tasks"
    return (f"chosen among the measured points on the same test items its gaps were measured on ({where}; "
            f"{seed_text}): an in-sample pick, not a fresh test; expect the gaps of a fresh measurement to be "
            "somewhat less favourable")
