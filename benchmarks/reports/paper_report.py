"""Markdown and PNG of a paper-table result (the JSON written by `paper_table.run`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from benchmarks.offsite_tuning.records import ROW_TITLES
from benchmarks.reports.gap_chart import gap_chart

LEARNED_MIN_SE = 3.0  # the chosen rate is the best of a grid, so its validation score is optimistic

TASK_NOTE = (
    "Tasks: those where SmolLM2-135M is clearly above chance after tuning, measured on the validation "
    "split (see docs/method-notes.md, 'Benchmark protocol'); each test set is the whole test split of its "
    "pack, for one standard error of at most about 2.5 points.")


def format_ci(gap: dict[str, Any] | None) -> str:
    if not gap:
        return "-"
    lo, hi = gap["ci95"]
    mark = "" if lo <= 0 <= hi else " *"
    return f"{gap['mean']:+.1f} [{lo:+.1f}, {hi:+.1f}]{mark}"


def _acc(cell: dict[str, Any], n: int) -> str:
    if not cell["acc"]:
        return "-"
    p = sum(cell["acc"]) / len(cell["acc"])
    return f"{100 * p:.1f} ± {100 * math.sqrt(p * (1 - p) / n):.1f}"


def format_num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _cosines(cosines: dict[str, float] | None) -> str:
    if not cosines:
        return "-"
    return ", ".join(f"{b}: {c:.2f}" for b, c in cosines.items())


def _summary_table(result: dict[str, Any]) -> list[str]:
    lines = ["## Summary (mean over tasks; gaps in points with paired 95% bootstrap CIs; * = CI excludes 0)", "",
             "| variant | plug-in | emulator fine-tuned | privacy gap | utility gap (adapter-only on full) | "
             "utility gap (full-parameter) | plug-in vs uniform | emulator ppl | KD error | agreement | "
             "grad cosine per block |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    n_tasks = len(result["tasks"])
    for s in result["summary"]:
        # a variant added to a run midway has not reached every task yet: its means are over fewer tasks
        name = s["variant"]
        if s.get("n_tasks", n_tasks) != n_tasks:
            name += f" ({s['n_tasks']} of {n_tasks} tasks)"
        cells = [name, f"{s['plug_in']['mean']:.1f}", f"{s['emulator_fine_tuned']['mean']:.1f}",
                 format_ci(s["privacy_gap"]), format_ci(s["utility_gap"]), format_ci(s["utility_gap_full_parameter"]),
                 format_ci(s["plug_in_vs_uniform"]), format_num(s["emulator_ppl"]), format_num(s["kd_error"], 3),
                 _share(s.get("agreement")), _cosines(s["grad_cosine"])]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _calibration_table(result: dict[str, Any]) -> list[str]:
    """Task-calibrated rows against their uncalibrated emulator: the model owner's privacy cost."""
    rows = [(task, gaps) for task, gaps in result["task_intervals"].items()
            if any("privacy_gap_vs_uncalibrated" in g for g in gaps.values())]
    if not rows:
        return []
    lines = ["## Task calibration: calibrated - uncalibrated emulator (points, paired 95% CIs over items and seeds)",
             "", "The calibrated emulator's harmonizers were refined on the task's training prompts without labels "
             "(`emulators/task_calibration.py`, default settings) before the data owner tuned on it. A negative "
             "privacy-gap difference is what calibration costs the model owner.", "",
             "| task | variant | agreement before -> after | privacy gap | plug-in | emulator fine-tuned |",
             "|---|---|---|---|---|---|"]
    fidelity = {(t["task"], r["variant"]): r.get("fidelity") or {} for t in result["tasks"] for r in t["rows"]}
    for task, gaps in rows:
        for variant, g in gaps.items():
            if "privacy_gap_vs_uncalibrated" not in g:
                continue
            f = fidelity.get((task, variant), {})
            lines.append(f"| {task} | {variant} | {_share(f.get('agreement_before_calibration'))} -> "
                         f"{_share(f.get('agreement'))} | {format_ci(g['privacy_gap_vs_uncalibrated'])} | "
                         f"{format_ci(g['plug_in_vs_uncalibrated'])} | "
                         f"{format_ci(g['emulator_fine_tuned_vs_uncalibrated'])} |")
    for s in result["summary"]:
        if s.get("privacy_gap_vs_uncalibrated"):
            lines.append(f"| mean of {s['n_tasks']} tasks | {s['variant']} | "
                         f"{_share(s.get('agreement_before_calibration'))} -> {_share(s.get('agreement'))} | "
                         f"{format_ci(s['privacy_gap_vs_uncalibrated'])} | {format_ci(s['plug_in_vs_uncalibrated'])} | "
                         f"{format_ci(s['emulator_fine_tuned_vs_uncalibrated'])} |")
    return [*lines, ""]


def _task_table(result: dict[str, Any]) -> list[str]:
    heads = ["task", "variant", *(ROW_TITLES[r] for r in ROW_TITLES), "privacy gap", "utility gap"]
    lines = ["## Per task (accuracy % ± standard error over test items, mean over seeds)", "",
             "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for t in result["tasks"]:
        n = t["n_test"]
        intervals = result["task_intervals"][t["task"]]
        for row in t["rows"]:
            cells = [_acc(t[r], n) for r in ("full_zero_shot", "adapter_tuning_full_model",
                                               "full_parameter_fine_tuning")]
            cells += [_acc(row[r], n) for r in ("emulator_zero_shot", "emulator_fine_tuned", "plug_in")]
            gaps = intervals[row["variant"]]
            lines.append(f"| {t['task']} (chance {100 * t['chance']:.0f}) | {row['variant']} | " + " | ".join(cells)
                         + f" | {format_ci(gaps['privacy_gap'])} | {format_ci(gaps['utility_gap'])} |")
    return [*lines, ""]


def learned_margin(task: dict[str, Any]) -> float | None:
    """How many standard errors the chosen adapter rate's validation accuracy clears the validation
    majority position by (None when either is unknown): the task rule, decided before any test item."""
    choice, majority = task["lr"].get("adapter"), task.get("validation_majority")
    if choice is None or majority is None or not choice["validation_acc"]:
        return None
    scores = choice["validation_acc"]
    acc, n = scores.get(f"{choice['lr']:g}", max(scores.values())), choice["n_valid"]
    se = (max(acc * (1 - acc), 1e-12) / n) ** 0.5
    return (acc - majority) / se


def _lr_table(result: dict[str, Any]) -> list[str]:
    lines = ["## Learning rates (chosen on the validation split, full model, seed = first seed)", "",
             f"A task counts as learned when adapter-only tuning at the chosen rate clears the validation split's "
             f"majority answer position by at least {LEARNED_MIN_SE:g} standard errors (`docs/method-notes.md`).", "",
             "| task | kind | chosen lr | validation accuracy per lr | validation majority | margin (SE) |",
             "|---|---|---|---|---|---|"]
    for t in result["tasks"]:
        for kind, choice in t["lr"].items():
            grid = ", ".join(f"{lr}: {100 * acc:.1f}" for lr, acc in choice["validation_acc"].items()) or "fixed"
            majority = margin = ""
            if kind == "adapter" and t.get("validation_majority") is not None:
                majority = f"{100 * t['validation_majority']:.1f}"
                value = learned_margin(t)
                verdict = "learned" if value is not None and value >= LEARNED_MIN_SE else "NOT learned"
                margin = "-" if value is None else f"{value:.1f} ({verdict})"
            lines.append(f"| {t['task']} | {kind} | {choice['lr']:g} | {grid} | {majority} | {margin} |")
    return [*lines, ""]


def _fidelity_table(result: dict[str, Any]) -> list[str]:
    lines = ["## Emulator fidelity per task (adapter-gradient cosine per full-model adapter block)", "",
             "| task | variant | perplexity | KD error | grad cosine |", "|---|---|---|---|---|"]
    for t in result["tasks"]:
        for row in t["rows"]:
            f = row.get("fidelity") or {}
            lines.append(f"| {t['task']} | {row['variant']} | {format_num(f.get('perplexity'))} | "
                         f"{format_num(f.get('kd_error'), 3)} | {_cosines(f.get('grad_cosine'))} |")
    return [*lines, ""]


def markdown(result: dict[str, Any]) -> str:
    b = result["budget"]
    tuning = b["tuning"]
    minutes = ", ".join(f"{t['task']} {t['seconds'] / 60:.0f}" for t in result["tasks"])
    split = result.get("adapter")
    adapter = f" (adapter {split['bottom']} + {split['top']} blocks)" if split else ""
    lines = [f"# Offsite-tuning matrix on {result['model']}", "",
             f"Profile {result['profile_id']}{adapter}; tasks {', '.join(t['task'] for t in result['tasks'])}; "
             f"{b['n_train']} train examples, {b['n_valid']} validation examples (learning-rate selection only), "
             f"test = {'whole test split' if b['n_test'] is None else str(b['n_test']) + ' examples'}; "
             f"seeds {b['seeds']}; {tuning['epochs']} epoch(s), batch {tuning['batch_size']}, "
             f"max {tuning['max_len']} tokens; {result['seconds'] / 60:.0f} min of benchmark time ({minutes}).", "",
             "Rows: the upper bound of the utility gap is **adapter-only tuning on the full model** (the same "
             "adapter blocks tuned directly on the full model, the service's `full_fine_tuning` row); "
             "**full-parameter fine-tuning** (every parameter of the full model, the paper's row) is beside it. "
             "Privacy gap = plug-in - emulator fine-tuned; utility gap = adapter-only tuning on the full model - "
             "plug-in. CIs: paired bootstrap over test items and seeds (means over tasks: each task "
             "resampled, then averaged).", "", TASK_NOTE, ""]
    lines += (_summary_table(result) + _calibration_table(result) + _task_table(result) + _lr_table(result)
              + _fidelity_table(result))
    return "\n".join(lines)


def chart(result: dict[str, Any], path: Path) -> None:
    """Privacy gap vs utility gap per variant (mean over tasks, 95% CIs), per-task points faded."""
    markers = {"uniform": "s", "scaleot": "o", "ot-kd": "^"}
    with gap_chart(path, f"{result['model']}: paired 95% CIs (faded: single tasks)") as ax:
        for s in result["summary"]:
            x, y = s["privacy_gap"], s["utility_gap"]
            err = [[[x["mean"] - x["ci95"][0]], [x["ci95"][1] - x["mean"]]],
                   [[y["mean"] - y["ci95"][0]], [y["ci95"][1] - y["mean"]]]]
            line = ax.errorbar(x["mean"], y["mean"], xerr=err[0], yerr=err[1], marker=markers.get(s["method"], "x"),
                               capsize=3, linestyle="none", label=f"{s['variant']} (mean of {s['n_tasks']} tasks)")
            for task, gaps in result["task_intervals"].items():
                if s["variant"] in gaps:
                    g = gaps[s["variant"]]
                    ax.scatter(g["privacy_gap"]["mean"], g["utility_gap"]["mean"], alpha=0.3, s=14,
                               color=line.lines[0].get_color(), marker=markers.get(s["method"], "x"))
                    ax.annotate(task[:10], (g["privacy_gap"]["mean"], g["utility_gap"]["mean"]), fontsize=5,
                                alpha=0.5)


def _share(value: float | None) -> str:
    """Emulator-full agreement as a percentage ('-' for results measured before it was recorded)."""
    return "-" if value is None else f"{100 * value:.0f}%"
