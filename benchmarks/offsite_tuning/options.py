"""Parsing of the benchmark commands' list options and budget overrides (shared by paper-table and frontier)."""

from __future__ import annotations

import json
from dataclasses import replace

from benchmarks.offsite_tuning.task_run import Budget, Variant
from model_owner_server.emulators.task_calibration import CalibrationSettings
from shared.tasks import TASKS

CALIBRATED = "calibrated"
METHODS = ("scaleot", "uniform", "ot-kd")  # ot-kd: uniform LayerDrop + distillation (Offsite-Tuning)


def parse_floats(text: str, option: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{option} must be comma-separated numbers, not {text!r}") from None
    if not values:
        raise ValueError(f"{option} needs at least one number")
    return values


def parse_ints(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{option} must be comma-separated integers, not {text!r}") from None
    if not values or len(set(values)) != len(values):
        raise ValueError(f"{option} needs distinct integers, got {text!r}")
    return values


DEFAULT_ADAPTER = (2, 2)


def parse_adapter(text: str) -> tuple[int, int]:
    """`--adapter B,T`: the first B and last T blocks are the adapter (each >= 0, B + T >= 1)."""
    parts = [p.strip() for p in text.split(",")]
    try:
        bottom, top = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"--adapter must be BOTTOM,TOP block counts (e.g. 2,2 or 1,3), not {text!r}") from None
    if bottom < 0 or top < 0 or bottom + top == 0:
        raise ValueError(f"--adapter needs counts >= 0 with at least one adapter block, got {text!r}")
    return bottom, top


def adapter_label(adapter: tuple[int, int]) -> str:
    """The file-name suffix of a run with another adapter split than the default (2 + 2), else ''."""
    return "" if adapter == DEFAULT_ADAPTER else f"-adapter{adapter[0]}+{adapter[1]}"


def stage1_label(overrides: str, corpus: str) -> str:
    """The file-name suffix of a run with stage-1 overrides or another corpus than the default, else ''.
    `overrides` is already validated (a JSON object of Stage1Config fields)."""
    values = json.loads(overrides) if overrides.strip() else {}
    parts = [f"{key}{values[key]:g}" if isinstance(values[key], float) else f"{key}{values[key]}"
             for key in sorted(values)]
    if corpus != "calibration":
        parts.append(corpus.split("+")[-1])
    return "".join(f"-{part}" for part in parts)


def parse_calibration(text: str, option: str) -> CalibrationSettings:
    """Task-calibration settings from a JSON object of CalibrationSettings fields ('' = the defaults)."""
    if not text.strip():
        return CalibrationSettings()
    try:
        values = json.loads(text)
    except json.JSONDecodeError:
        values = None
    if not isinstance(values, dict):
        raise ValueError(f"{option} must be a JSON object of calibration settings, e.g. '{{\"steps\": 200}}'")
    return CalibrationSettings.model_validate(values)


def calibration_label(overrides: str) -> str:
    """The file-name suffix of a calibrated run: '-calibrated' and any overridden setting."""
    values = json.loads(overrides) if overrides.strip() else {}
    return "-calibrated" + "".join(f"-{key}{values[key]:g}" if isinstance(values[key], float)
                                   else f"-{key}{values[key]}" for key in sorted(values))


def parse_tasks(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in names if t not in TASKS]
    if not names:
        raise ValueError("--tasks needs at least one task name")
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; available: {', '.join(TASKS)}")
    non_mc = [t for t in names if TASKS[t].kind != "multiple_choice"]
    if non_mc:
        raise ValueError(f"the benchmark needs multiple-choice tasks; {non_mc} are not")
    return names


def parse_variants(text: str, alpha: float, option: str = "--variants") -> list[Variant]:
    """'method:beta[,...]' at `alpha`, or 'method:beta:alpha' for another alpha; a trailing ':calibrated'
    refines the emulator's harmonizers on the task's unlabelled training prompts first."""
    variants = []
    for item in (v.strip() for v in text.split(",") if v.strip()):
        parts = item.split(":")
        calibrated = len(parts) > 2 and parts[-1] == CALIBRATED
        if calibrated:
            parts = parts[:-1]
        try:
            if len(parts) not in (2, 3):
                raise ValueError
            variant = Variant(parts[0], float(parts[1]), float(parts[2]) if len(parts) == 3 else alpha, calibrated)
        except ValueError:
            raise ValueError(f"{option} must look like uniform:0,scaleot:0.5[:alpha][:{CALIBRATED}], "
                             f"not {text!r}") from None
        if variant.method not in METHODS:
            raise ValueError(f"{option} methods must be one of {', '.join(METHODS)}, not {variant.method!r}")
        if calibrated and variant.method != "scaleot":
            raise ValueError(f"{option}: only scaleot emulators have harmonizers to calibrate, not {item!r}")
        variants.append(variant)
    if not variants or len({v.label for v in variants}) != len(variants):
        raise ValueError(f"{option} needs distinct variants, got {text!r}")
    return variants


def override_budget(budget: Budget, *, n_train: int | None = None, n_valid: int | None = None,
                    n_test: int | None = None, seeds: str | None = None, lr_grid: str | None = None,
                    full_lr_grid: str | None = None, epochs: int | None = None,
                    fidelity_batches: int | None = None) -> Budget:
    """`budget` with the options the user gave (None keeps the budget's value); the list options are the
    raw comma-separated text, so a bad one is a ValueError naming its option. `full_lr_grid` 'none':
    no full-parameter row. Counts are checked here: a negative one would slice a split from its end."""
    counts = {"n_train": (n_train, 1), "n_valid": (n_valid, 0), "n_test": (n_test, 1),
              "fidelity_batches": (fidelity_batches, 0)}
    for name, (value, least) in counts.items():
        if value is not None and value < least:
            raise ValueError(f"--{name.replace('_', '-')} must be at least {least}, got {value}")
    updates: dict[str, object] = {k: v for k, (v, _) in counts.items() if v is not None}
    if seeds is not None:
        updates["seeds"] = parse_ints(seeds, "--seeds")
    if lr_grid is not None:
        updates["lr_grid"] = parse_floats(lr_grid, "--lr-grid")
    if full_lr_grid is not None:
        updates["full_lr_grid"] = () if full_lr_grid == "none" else parse_floats(full_lr_grid, "--full-lr-grid")
    if epochs is not None:
        updates["tuning"] = budget.tuning.model_copy(update={"epochs": epochs})
    return replace(budget, **updates)  # type: ignore[arg-type]
