"""Benchmark: the Offsite-Tuning / ScaleOT table on a real model, with paired statistics.

For each task (`task_run`): learning rates chosen on the validation split, then every row of the
matrix on the test split for every tuning seed (full model zero-shot, adapter-only tuning on the full
model, full-parameter fine-tuning, and per emulator variant: emulator zero-shot, emulator fine-tuned,
plug-in) plus the emulator's fidelity. Gaps get paired bootstrap CIs (`summary`, `stats`).

The run is resumable task by task: a state file next to the results keeps every finished task
(and each task's chosen learning rates); the same command started again skips them. Results (JSON,
markdown, PNG) are rewritten after every task.
"""

from __future__ import annotations

import json
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks import output
from benchmarks.offsite_tuning.records import Cell, TaskResult
from benchmarks.offsite_tuning.run_state import StateMismatchError, open_state, save_state
from benchmarks.offsite_tuning.task_run import (
    Budget,
    Log,
    Variant,
    adapter_blocks,
    expected_emulator_id,
    majority_share,
    prefixed,
    rerun_variant,
    run_task,
    split,
    train_items,
    tuning_for,
)
from benchmarks.offsite_tuning.tuning_select import select_task_lrs
from benchmarks.reports import paper_report
from benchmarks.reports.summary import summarize, task_intervals
from data_owner_client.tuning.config import TuningConfig
from model_owner_server.base_models import LoadedBase
from model_owner_server.emulators.profile import ImportanceProfile
from shared.data_formats import MCExample
from shared.tasks import TaskData, load_mc_task

__all__ = ["QUICK", "STANDARD", "Budget", "Variant", "run", "state_path"]

_TUNING = TuningConfig(epochs=1, lr=3e-4, batch_size=8, max_len=192)
# Sized for the 2-core CPU (docs/method-notes.md, "Benchmark protocol").
STANDARD = Budget(n_train=320, n_valid=200, n_test=None, seeds=(0, 1), tuning=_TUNING,
                  lr_grid=(1e-4, 3e-4, 1e-3), full_lr_grid=(1e-5, 3e-5), fidelity_batches=4)
QUICK = Budget(n_train=64, n_valid=48, n_test=120, seeds=(0, 1), tuning=_TUNING,
               lr_grid=(3e-4, 1e-3), full_lr_grid=(3e-5,), fidelity_batches=2)
STANDARD_TASKS = ("goal_step_wikihow_goal", "goal_step_wikihow_step", "bbc_news", "intent_recognition")
QUICK_TASKS = ("goal_step_wikihow_goal",)

TaskLoader = Callable[[str], TaskData[MCExample]]


def state_path(out_dir: Path, label: str, prefix: str = "paper-table") -> Path:
    return out_dir / f".{prefix}-{label}.state.json"


def run_config(base: LoadedBase, profile: ImportanceProfile, tasks: list[str], variants: list[Variant],
               budget: Budget) -> dict[str, Any]:
    """What a run's results depend on. All but the tasks and variants bind the state file (its
    fingerprint): a finished task's rows follow the variants of the run that resumes it
    (`_refresh_rows`), and the report holds the tasks of that run (a task dropped from the list stays in
    the state, so listing it again costs nothing)."""
    return {"model": base.name, "base_model_sha256": base.weights_sha256, "profile_id": profile.meta.profile_id,
            "tasks": tasks, "variants": [v.label for v in variants], "budget": budget_json(budget)}


def budget_json(budget: Budget) -> dict[str, Any]:
    return {"n_train": budget.n_train, "n_valid": budget.n_valid, "n_test": budget.n_test,
            "seeds": list(budget.seeds), "lr_grid": list(budget.lr_grid), "full_lr_grid": list(budget.full_lr_grid),
            "fidelity_batches": budget.fidelity_batches, "tuning": budget.tuning.model_dump()}


def seed_state(path: Path, config: dict[str, Any], source: Path) -> None:
    """Start a run's state from a committed result file (`--from-results`): its finished tasks with their
    reference rows, learning rates and variant rows, so that this run adds only its new variant rows,
    paired with the committed ones on the same items and seeds. The result must be of this model, profile
    and budget; a state that exists already is kept (the run resumes it)."""
    if path.is_file():
        return
    try:
        stored = json.loads(source.read_text())
    except (OSError, ValueError) as exc:
        raise StateMismatchError(f"cannot read {source}: {exc}") from None
    if not isinstance(stored, dict) or stored.get("benchmark") != "paper-table":
        raise StateMismatchError(f"{source} is not a paper-table result")
    mine = json.loads(json.dumps(config, default=str))
    for key in ("model", "profile_id", "budget"):
        if stored.get(key) != mine[key]:
            raise StateMismatchError(f"{source} was run with another {key} ({stored.get(key)!r}, this run "
                                     f"{mine[key]!r}); its rows cannot be paired with this run's")
    state = open_state(path, config, unbound=UNBOUND)
    wanted = list(config["variants"])
    for task in stored.get("tasks", []):
        result = TaskResult.model_validate(task)
        # this run's variants are its rows from the start (a report written before every task was refreshed
        # must not show the committed run's other variants); the rest is kept aside, as a resumed run does
        by_label = {row.variant: row for row in result.rows}
        result.rows = [by_label[label] for label in wanted if label in by_label]
        result.set_aside = [row for label, row in by_label.items() if label not in wanted]
        state.tasks[result.task] = result
        state.lrs[result.task] = result.lr
    save_state(path, state)


UNBOUND = ("variants", "tasks")


def run(base: LoadedBase, profile: ImportanceProfile, tasks: list[str], variants: list[Variant], budget: Budget,
        out_dir: Path, label: str, restart: bool = False, load_task: TaskLoader = load_mc_task,
        log: Log = output.log, prefix: str = "paper-table", from_results: Path | None = None) -> dict[str, Any]:
    """Files: `<out_dir>/<prefix>-<label>.{json,md,png}`, state `<out_dir>/.<prefix>-<label>.state.json`.
    `from_results`: a committed result of the same model, profile and budget to start from (`seed_state`)."""
    config = run_config(base, profile, tasks, variants, budget)
    path = state_path(out_dir, label, prefix)
    if restart and path.is_file():
        path.unlink()
    if from_results is not None:
        seed_state(path, config, from_results)
    state = open_state(path, config, unbound=UNBOUND)
    if state.tasks:
        log(f"resuming {path}: finished {', '.join(state.tasks)}")
        if kept := [t for t in state.tasks if t not in tasks]:
            log(f"kept in the state but not in this run's tasks (not reported): {', '.join(kept)}")

    def write() -> dict[str, Any]:
        listed = {task: state.tasks[task] for task in tasks if task in state.tasks}  # this run's tasks, in order
        return _write(base, profile, listed, budget, out_dir / f"{prefix}-{label}") if listed else {}

    result = write()
    blocks = adapter_blocks(base, profile)
    with tempfile.TemporaryDirectory(prefix="scaleot-paper-table-") as tmp:
        for task in tasks:
            stored = state.tasks.get(task) or state.partial.get(task)
            if stored is not None and stored.validation_majority is None:  # a state from before it was kept
                _, validation, _ = split(load_task(task), budget)
                stored.validation_majority = majority_share(validation)
                save_state(path, state)
                if task in state.tasks:
                    result = write()
            if task in state.tasks:
                if _refresh_rows(base, profile, task, state.tasks[task], variants, budget, Path(tmp), load_task,
                                 prefixed(log, task), lambda: save_state(path, state)):
                    save_state(path, state)
                    result = write()
                else:
                    log(f"{task}: finished in an earlier run, skipped")
                continue
            if task in state.partial:  # stopped after its reference rows: only the missing variant rows run
                log(f"{task}: resuming inside the task ({len(state.partial[task].rows)} variant rows done)")
                _refresh_rows(base, profile, task, state.partial[task], variants, budget, Path(tmp), load_task,
                              prefixed(log, task), lambda: save_state(path, state))
                state.tasks[task] = state.partial.pop(task)
                save_state(path, state)
                result = write()
                continue
            data = load_task(task)
            if task not in state.lrs:
                train, validation, _ = split(data, budget)
                scored = state.lr_scores.setdefault(task, {})

                def remember(kind: str, lr: float, acc: float, scored: dict[str, dict[str, float]] = scored) -> None:
                    scored.setdefault(kind, {})[f"{lr:g}"] = acc  # a selection stopped midway resumes from here
                    save_state(path, state)

                state.lrs[task] = select_task_lrs(base.model, base.tokenizer, blocks, train, validation,
                                                  tuning_for(budget, budget.lr_grid[0], budget.seeds[0]),
                                                  budget.grids, prefixed(log, task), known=scored, on_score=remember)
                state.lr_scores.pop(task, None)
                save_state(path, state)

            def keep(partial: TaskResult, task: str = task) -> None:
                state.partial[task] = partial
                state.reference_cells.pop(task, None)  # the partial task holds them now
                save_state(path, state)

            def keep_reference(row: str, cell: Cell, task: str = task) -> None:
                state.reference_cells.setdefault(task, {})[row] = cell
                save_state(path, state)

            state.tasks[task] = run_task(base, profile, data, variants, budget, Path(tmp), prefixed(log, task),
                                         lrs=state.lrs[task], save_partial=keep,
                                         known_reference=state.reference_cells.get(task),
                                         save_reference=keep_reference)
            state.partial.pop(task, None)
            save_state(path, state)
            result = write()
    return result


def _refresh_rows(base: LoadedBase, profile: ImportanceProfile, task: str, result: TaskResult,
                  variants: list[Variant], budget: Budget, workdir: Path, load_task: TaskLoader, log: Log,
                  save: Callable[[], None]) -> bool:
    """Bring a finished task's rows (or a task stopped after its reference rows) to this run's variants, in
    its order: a variant added since (e.g. the OT-KD row) is run, and one whose stored emulator is not what
    the current code builds (e.g. SRC emulators once the harmonizer re-fit came) is re-run, both against the
    task's stored reference rows; a mean over tasks must not mix two emulators under one label. `save` runs
    after every new row (an interrupted refresh keeps them). Returns whether anything changed."""
    stored = {row.variant: row for row in [*result.set_aside, *result.rows]}
    wanted = [v.label for v in variants]
    loaded: list[TaskData[MCExample]] = []

    def data() -> TaskData[MCExample]:
        if not loaded:
            loaded.append(load_task(task))
        return loaded[0]

    def expected(variant: Variant) -> str:  # a calibrated emulator's id names the task's prompts: load them
        return expected_emulator_id(base, profile, variant, train_items(data(), budget) if variant.calibrated else None)

    todo = [v for v in variants if v.label not in stored or stored[v.label].emulator_id != expected(v)]
    rows_before = [row.variant for row in result.rows]

    def place() -> None:
        result.rows = [stored[label] for label in wanted if label in stored]
        result.set_aside = [row for label, row in stored.items() if label not in wanted]

    if todo:
        for variant in todo:
            old = stored.get(variant.label)
            log(f"{variant.label}: " + ("not run on this task yet" if old is None else
                f"stored emulator {old.emulator_id} is not what this code builds "
                f"({expected(variant)})") + "; running this row only")
            stored[variant.label] = rerun_variant(base, profile, data(), result, variant, budget, workdir, log)
            place()
            save()
    place()
    return bool(todo) or [row.variant for row in result.rows] != rows_before


def _write(base: LoadedBase, profile: ImportanceProfile, tasks: dict[str, Any], budget: Budget,
           stem: Path) -> dict[str, Any]:
    finished = list(tasks.values())
    result = {
        "benchmark": "paper-table", "model": base.name, "profile_id": profile.meta.profile_id,
        "adapter": {"bottom": profile.meta.config.adapter_bottom, "top": profile.meta.config.adapter_top},
        "budget": budget_json(budget),
        "host": {"machine": platform.machine(), "threads": torch.get_num_threads(), "torch": torch.__version__},
        "seconds": sum(t.seconds for t in finished),
        "summary": summarize(finished),
        "task_intervals": {t.task: {v: {k: i.model_dump(mode="json") for k, i in gaps.items()}
                                    for v, gaps in task_intervals(t).items()} for t in finished},
        "tasks": [t.model_dump(exclude={"set_aside"}) for t in finished],
    }
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.parent.joinpath(f"{stem.name}.json").write_text(json.dumps(result, indent=1))
    stem.parent.joinpath(f"{stem.name}.md").write_text(paper_report.markdown(result))
    paper_report.chart(result, stem.parent / f"{stem.name}.png")
    return result


markdown = paper_report.markdown
