"""Benchmark: the privacy-utility frontier of one stage-1 profile, alpha and beta as the owner's dials.

From one profile, every ScaleOT emulator of the (alpha, beta) grid plus uniform LayerDrop at each
alpha (the reference) is tuned once per tuning seed on one or two tasks, with exactly the
paper-table protocol (`paper_table.run`: validation-chosen learning rate, paired bootstrap CIs,
resumable task by task; its raw per-item results go to `frontier-raw-<label>.*`). Each point is
one variant's mean over the tasks: privacy gap, utility gap (both with CIs), plug-in accuracy and
emulator perplexity. `frontier-<label>.{json,md,png}` hold the points, the Pareto front and the
(alpha, beta) that `recommend` picks for a range of wanted privacy gaps.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import output
from benchmarks.offsite_tuning import paper_table
from benchmarks.offsite_tuning.task_run import Budget, Log, Variant
from benchmarks.reports import frontier_report
from data_owner_client.tuning.config import TuningConfig
from model_owner_server.base_models import LoadedBase
from model_owner_server.emulators.profile import ImportanceProfile
from model_owner_server.recommendation.frontier_file import FrontierFile, parse_frontier
from model_owner_server.recommendation.rule import NoRecommendationError, recommended_point
from shared.tasks import load_mc_task

ALPHAS = (0.25, 0.5, 0.75)
BETAS = (0.0, 0.25, 0.5, 0.75)
TASKS = ("bbc_news",)
TARGETS = (0.0, 1.0, 2.0, 3.0, 5.0, 8.0)  # wanted privacy gaps the result lists a recommendation for
POINT_KEYS = ("variant", "method", "alpha", "beta", "privacy_gap", "utility_gap", "utility_gap_full_parameter",
              "plug_in_vs_uniform", "plug_in", "emulator_fine_tuned", "emulator_zero_shot", "upper_bound",
              "emulator_ppl", "kd_error", "agreement", "answer_kl", "grad_cosine", "n_tasks", "tasks")

_TUNING = TuningConfig(epochs=1, lr=3e-4, batch_size=8, max_len=192)
# one seed per point (the grid is the replication); the whole test split
STANDARD = Budget(n_train=320, n_valid=200, n_test=None, seeds=(0,), tuning=_TUNING, lr_grid=(1e-4, 3e-4, 1e-3),
                  fidelity_batches=2)
QUICK = Budget(n_train=64, n_valid=48, n_test=120, seeds=(0,), tuning=_TUNING, lr_grid=(1e-3,), fidelity_batches=0)


def default_label(model: str, tasks: Sequence[str], quick: bool, adapter_label: str) -> str:
    """model [+ -tasks, unless the default task] [+ -quick] [+ -adapterB+T]: a frontier on other tasks gets its
    own files and state, instead of overwriting the default frontier's (its state would resume, as the tasks
    are not bound to it)."""
    on_tasks = "" if tuple(tasks) == TASKS else "-" + "+".join(tasks)
    return f"{model}{on_tasks}{'-quick' if quick else ''}{adapter_label}"


def grid_variants(alphas: Sequence[float], betas: Sequence[float]) -> list[Variant]:
    """Uniform LayerDrop (beta 0) at each alpha, then ScaleOT at every (alpha, beta)."""
    return [Variant("uniform", 0.0, a) for a in alphas] + [Variant("scaleot", b, a) for a in alphas for b in betas]


def pareto(points: list[dict[str, Any]]) -> list[str]:
    """Labels of the points no other point beats on both privacy gap (higher) and utility gap (lower)."""
    def dominated(p: dict[str, Any]) -> bool:
        pg, ug = p["privacy_gap"]["mean"], p["utility_gap"]["mean"]
        return any(q is not p and q["privacy_gap"]["mean"] >= pg and q["utility_gap"]["mean"] <= ug
                   and (q["privacy_gap"]["mean"] > pg or q["utility_gap"]["mean"] < ug) for q in points)

    return [p["variant"] for p in points if not dominated(p)]


def recommendations(frontier: FrontierFile, targets: Sequence[float] = TARGETS) -> list[dict[str, Any]]:
    rows = []
    for target in targets:
        try:
            point = recommended_point(frontier, target).model_dump(mode="json")
            rows.append({"target_privacy_gap": target, **{k: point[k] for k in ("alpha", "beta", "privacy_gap",
                                                                                  "utility_gap")}})
        except NoRecommendationError as exc:
            rows.append({"target_privacy_gap": target, "alpha": None, "beta": None, "reason": str(exc)})
    return rows


def frontier_result(raw: dict[str, Any]) -> dict[str, Any]:
    """The frontier JSON from a paper-table result over the grid's variants, checked against the schema its
    readers use (`FrontierFile`) before anything is written."""
    points = [{k: entry.get(k) for k in POINT_KEYS} for entry in raw["summary"]]
    scaleot = [p for p in points if p["method"] == "scaleot"]
    result: dict[str, Any] = {
        "benchmark": "frontier", "model": raw["model"], "profile_id": raw["profile_id"], "adapter": raw.get("adapter"),
        "budget": raw["budget"],
        "tasks": [t["task"] for t in raw["tasks"]], "seconds": raw["seconds"], "points": points,
        # the adapter learning rate chosen on each task's validation split (full model): served with the
        # recommendation as a starting point for the data owner's own tuning
        "learning_rates": {t["task"]: t["lr"]["adapter"]["lr"] for t in raw["tasks"] if "adapter" in t.get("lr", {})},
        "pareto_scaleot": pareto(scaleot), "pareto_all": pareto(points),
    }
    result["recommendations"] = recommendations(parse_frontier(result, "the frontier being written"))
    return result


def run(base: LoadedBase, profile: ImportanceProfile, tasks: list[str], alphas: Sequence[float],
        betas: Sequence[float], budget: Budget, out_dir: Path, label: str, restart: bool = False,
        load_task: paper_table.TaskLoader = load_mc_task, log: Log | None = None) -> dict[str, Any]:
    raw = paper_table.run(base, profile, tasks, grid_variants(alphas, betas), budget, out_dir, label,
                          restart=restart, load_task=load_task, log=log or output.log, prefix="frontier-raw")
    result = frontier_result(raw)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"frontier-{label}.json").write_text(json.dumps(result, indent=1))
    (out_dir / f"frontier-{label}.md").write_text(frontier_report.markdown(result))
    frontier_report.chart(result, out_dir / f"frontier-{label}.png")
    return result
