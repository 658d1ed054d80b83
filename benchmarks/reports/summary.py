"""Gaps with paired bootstrap intervals, per task and averaged over tasks (all in accuracy points).

- privacy gap = plug-in - emulator fine-tuned (same seed, same items);
- utility gap = adapter-only tuning on the full model - plug-in (same seed, same items); the
  utility gap to full-parameter fine-tuning is reported beside it;
- scaleot vs uniform = plug-in of the variant - plug-in of uniform LayerDrop at the same alpha
  (same beta if that variant was run, else beta 0);
- for a task-calibrated emulator, calibrated - uncalibrated (same method, alpha and beta) of the privacy
  gap, the plug-in and the emulator fine-tuned: what calibration costs the model owner in privacy and
  buys the data owner in utility.
Across tasks, each task is bootstrapped on its own items and seeds and the task means are averaged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks.offsite_tuning.records import Cell, TaskResult, VariantRow
from benchmarks.reports.stats import Interval, as_matrix, bootstrap_mean, paired_difference


def _diff(a: Cell, b: Cell) -> np.ndarray:
    return paired_difference(as_matrix(a.correct), as_matrix(b.correct))


def _uniform_reference(task: TaskResult, row: VariantRow) -> VariantRow | None:
    if row.method == "uniform":
        return None
    same_alpha = [r for r in task.rows if r.method == "uniform" and r.alpha == row.alpha]
    exact = [r for r in same_alpha if r.beta == row.beta]
    plain = [r for r in same_alpha if r.beta == 0]
    candidates = exact or plain
    return candidates[0] if candidates else None


def _uncalibrated(task: TaskResult, row: VariantRow) -> VariantRow | None:
    if not row.calibrated:
        return None
    key = (row.method, row.alpha, row.beta)
    same = [r for r in task.rows if not r.calibrated and (r.method, r.alpha, r.beta) == key]
    return same[0] if same else None


CALIBRATION_GAPS = ("privacy_gap_vs_uncalibrated", "plug_in_vs_uncalibrated", "emulator_fine_tuned_vs_uncalibrated")
GAPS = ("utility_gap", "privacy_gap", "utility_gap_full_parameter", "plug_in_vs_uniform", *CALIBRATION_GAPS)


def gap_differences(task: TaskResult, row: VariantRow) -> dict[str, np.ndarray]:
    """Per-item paired differences (seeds x items, points) of one variant on one task."""
    diffs = {
        "privacy_gap": _diff(row.plug_in, row.emulator_fine_tuned),
        "utility_gap": _diff(task.adapter_tuning_full_model, row.plug_in),
    }
    if task.full_parameter_fine_tuning.acc:
        diffs["utility_gap_full_parameter"] = _diff(task.full_parameter_fine_tuning, row.plug_in)
    reference = _uniform_reference(task, row)
    if reference is not None:
        diffs["plug_in_vs_uniform"] = _diff(row.plug_in, reference.plug_in)
    plain = _uncalibrated(task, row)
    if plain is not None:
        diffs["privacy_gap_vs_uncalibrated"] = diffs["privacy_gap"] - _diff(plain.plug_in, plain.emulator_fine_tuned)
        diffs["plug_in_vs_uncalibrated"] = _diff(row.plug_in, plain.plug_in)
        diffs["emulator_fine_tuned_vs_uncalibrated"] = _diff(row.emulator_fine_tuned, plain.emulator_fine_tuned)
    return diffs


def task_intervals(task: TaskResult, n_boot: int = 2000) -> dict[str, dict[str, Interval]]:
    """variant label -> gap name -> Interval, for one task."""
    return {row.variant: {name: bootstrap_mean([d], n_boot=n_boot) for name, d in gap_differences(task, row).items()}
            for row in task.rows}


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _fidelity(rows: list[VariantRow], key: str) -> float | None:
    return _mean([float(r.fidelity[key]) if r.fidelity and r.fidelity.get(key) is not None else None  # type: ignore[arg-type]
                  for r in rows])


def _grad_cosine(rows: list[VariantRow]) -> dict[str, float] | None:
    per_block: dict[str, list[float]] = {}
    for r in rows:
        cosines = (r.fidelity or {}).get("grad_cosine") or {}
        assert isinstance(cosines, dict)
        for block, value in cosines.items():
            per_block.setdefault(str(block), []).append(float(value))
    return {b: float(np.mean(v)) for b, v in sorted(per_block.items(), key=lambda kv: int(kv[0]))} or None


def summarize(tasks: list[TaskResult], n_boot: int = 2000) -> list[dict[str, Any]]:
    """One entry per variant (in run order), averaged over the tasks that ran it."""
    order: list[str] = []
    by_variant: dict[str, list[tuple[TaskResult, VariantRow]]] = {}
    for task in tasks:
        for row in task.rows:
            if row.variant not in by_variant:
                order.append(row.variant)
            by_variant.setdefault(row.variant, []).append((task, row))
    summary = []
    for label in order:
        pairs = by_variant[label]
        first = pairs[0][1]
        per_gap: dict[str, list[np.ndarray]] = {}
        for task, row in pairs:
            for name, diff in gap_differences(task, row).items():
                per_gap.setdefault(name, []).append(diff)
        rows = [row for _, row in pairs]
        entry: dict[str, Any] = {
            "variant": label, "method": first.method, "alpha": first.alpha, "beta": first.beta,
            "calibrated": first.calibrated,
            "n_tasks": len(pairs), "tasks": [task.task for task, _ in pairs],
        }
        for name in GAPS:
            # a gap missing on some task (no uniform reference there) is averaged over the tasks that have it
            interval = bootstrap_mean(per_gap[name], n_boot=n_boot) if name in per_gap else None
            entry[name] = interval.model_dump(mode="json") if interval is not None else None
        for cell in ("plug_in", "emulator_fine_tuned", "emulator_zero_shot"):
            entry[cell] = {"mean": float(np.mean([100 * getattr(row, cell).mean for row in rows]))}
        entry["upper_bound"] = {"mean": float(np.mean([100 * t.adapter_tuning_full_model.mean for t, _ in pairs]))}
        entry["emulator_ppl"] = _fidelity(rows, "perplexity")
        entry["kd_error"] = _fidelity(rows, "kd_error")
        entry["agreement"] = _fidelity(rows, "agreement")
        entry["answer_kl"] = _fidelity(rows, "answer_kl")
        entry["agreement_before_calibration"] = _fidelity(rows, "agreement_before_calibration")
        entry["grad_cosine"] = _grad_cosine(rows)
        summary.append(entry)
    return summary
