"""One task of the paper-table benchmark: every row of the matrix, for every tuning seed.

Reference rows on the full model: zero-shot, adapter-only tuning (the utility upper bound) and
full-parameter fine-tuning. Per emulator variant, exactly as the data owner and the model owner do
it: build the emulator from the profile (artifact on disk), tune the adapter on it with
`train_adapter`, check the adapter, and evaluate it with the service's `evaluate_adapter` (emulator
zero-shot, emulator fine-tuned, plug-in). Learning rates come from the validation split
(`tuning_select`), scores from the test split; the runner never mixes the two.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.offsite_tuning.fidelity_probe import measure_fidelity
from benchmarks.offsite_tuning.full_tuning import tuned_copy
from benchmarks.offsite_tuning.records import Cell, TaskResult, VariantRow
from benchmarks.offsite_tuning.tuning_select import LrChoice, select_task_lrs
from data_owner_client.tuning.config import TuningConfig
from data_owner_client.tuning.local import train_adapter
from model_owner_server import adapter_checks
from model_owner_server.base_models import LoadedBase
from model_owner_server.emulators.build import build_emulator
from model_owner_server.emulators.profile import ImportanceProfile
from model_owner_server.emulators.spec import EmulatorSpec
from model_owner_server.emulators.task_calibration import (
    CalibrationSettings,
    calibrate_harmonizers,
    calibrated_emulator_id,
    prompt_set_sha256,
)
from model_owner_server.evaluation.agreement import AgreementReport, choice_loglikelihoods, compare_answers
from model_owner_server.evaluation.matrix import Score, score_model
from model_owner_server.evaluation.run import evaluate_adapter
from shared.artifacts import ArtifactError, load_emulator, verify_emulator, write_emulator
from shared.cache import cache_dir
from shared.data_formats import MCExample, TrainExample, unlabelled
from shared.manifest import EmulatorManifest, EmulatorOptions
from shared.tasks import TaskData, as_training_examples

Log = Callable[[str], None]


@dataclass(frozen=True)
class Variant:
    method: str  # "scaleot", "uniform" or "ot-kd" (Offsite-Tuning's distilled emulator: uniform + distillation)
    beta: float
    alpha: float = 0.5
    # harmonizers refined on the task's unlabelled training prompts before the data owner tunes on it
    # (`emulators/task_calibration.py`); the model owner's side of the trade is the privacy gap it costs
    calibrated: bool = False

    @property
    def label(self) -> str:
        suffix = ", task-calibrated" if self.calibrated else ""
        return f"{self.method} (alpha {self.alpha:g}, beta {self.beta:g}{suffix})"

    @property
    def uncalibrated(self) -> Variant:
        return Variant(self.method, self.beta, self.alpha)


@dataclass(frozen=True)
class Budget:
    n_train: int
    n_valid: int  # validation examples for the learning-rate selection
    n_test: int | None  # None: the whole test split
    seeds: tuple[int, ...]
    tuning: TuningConfig  # lr and seed are replaced by the selected rate and each seed
    lr_grid: tuple[float, ...]  # adapter tuning
    full_lr_grid: tuple[float, ...] = ()  # full-parameter fine-tuning; empty: no full-parameter row
    fidelity_batches: int = 4
    grids: dict[str, tuple[float, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("at least one tuning seed")
        grids = {"adapter": self.lr_grid, **({"full_parameter": self.full_lr_grid} if self.full_lr_grid else {})}
        object.__setattr__(self, "grids", grids)


def prefixed(log: Log, prefix: str) -> Log:
    return lambda message: log(f"{prefix}: {message}")


def adapter_blocks(base: LoadedBase, profile: ImportanceProfile) -> list[int]:
    cfg = profile.meta.config
    return list(range(cfg.adapter_bottom)) + list(range(base.num_layers - cfg.adapter_top, base.num_layers))


def tuning_for(budget: Budget, lr: float, seed: int) -> TuningConfig:
    return budget.tuning.model_copy(update={"lr": lr, "seed": seed})


def majority_share(items: list[MCExample]) -> float | None:
    """Share of the most frequent gold choice position: what answering one fixed position scores."""
    return max(Counter(e.label for e in items).values()) / len(items) if items else None


def train_items(data: TaskData[MCExample], budget: Budget) -> list[MCExample]:
    """The budget's training items (labelled, as the data owner holds them)."""
    return data.train[: budget.n_train]


def split(data: TaskData[MCExample], budget: Budget) -> tuple[list[TrainExample], list[MCExample], list[MCExample]]:
    """(training examples, validation items, test items) of the budget: prefixes of the pack's splits."""
    train = as_training_examples(data.train[: budget.n_train])
    test = data.test if budget.n_test is None else data.test[: budget.n_test]
    return train, data.validation[: budget.n_valid], test


def _reference_rows(base: LoadedBase, blocks: list[int], train: list[TrainExample], test: list[MCExample],
                    budget: Budget, lrs: dict[str, LrChoice], log: Log, known: dict[str, Cell] | None = None,
                    on_cell: Callable[[str, Cell], None] | None = None) -> dict[str, tuple[Cell, list[Score]]]:
    """Adapter-only and full-parameter tuning on the full model, one run per seed. `known`: the cells of an
    interrupted run (the seeds they hold are not run again); `on_cell(row, cell)` after every seed."""
    rows: dict[str, tuple[Cell, list[Score]]] = {}
    for kind, row in (("adapter", "adapter_tuning_full_model"), ("full_parameter", "full_parameter_fine_tuning")):
        cell = (known or {}).get(row, Cell.empty()).model_copy(deep=True)
        scores = [_score(cell, i) for i in range(len(cell.acc))]
        for seed, score in zip(budget.seeds, scores, strict=False):
            log(f"{row} seed {seed}: acc {score.value:.3f} (from an earlier run)")
        if kind in lrs:
            for seed in budget.seeds[len(scores):]:
                started = time.perf_counter()
                config = tuning_for(budget, lrs[kind].lr, seed)
                tuned = tuned_copy(base.model, base.tokenizer, kind, blocks, train, config)
                scores.append(score_model(tuned, base.tokenizer, test))
                cell.add(scores[-1])
                cell.seconds += time.perf_counter() - started
                del tuned
                log(f"{row} seed {seed}: acc {scores[-1].value:.3f}")
                if on_cell is not None:
                    on_cell(row, cell)
        rows[row] = (cell, scores)
    return rows


def variant_spec(base: LoadedBase, profile: ImportanceProfile, variant: Variant) -> EmulatorSpec:
    cfg = profile.meta.config
    distill = variant.method == "ot-kd"
    return EmulatorSpec(base_model=base.name, method="uniform" if distill else variant.method, alpha=variant.alpha,
                        beta=variant.beta, adapter_bottom=cfg.adapter_bottom, adapter_top=cfg.adapter_top,
                        options=EmulatorOptions(distill=distill))


def variant_emulator(base: LoadedBase, spec: EmulatorSpec, profile: ImportanceProfile, workdir: Path,
                     log: Log) -> tuple[Path, EmulatorManifest]:
    """Build the variant's emulator under `workdir`; a distilled one (minutes of training, the same for
    every task) is kept in the cache by its id and reused while its files verify."""
    if not spec.distills:
        out = workdir / "emulator"
        return out, build_emulator(base, spec, profile, out)
    emulator_id = spec.emulator_id(base.weights_sha256, profile.meta.profile_id, base.dtype)
    cached = cache_dir() / "bench-emulators" / emulator_id
    with contextlib.suppress(ArtifactError, OSError, ValueError):
        manifest = verify_emulator(cached)
        log(f"reusing the distilled emulator {emulator_id} from {cached}")
        return cached, manifest
    log(f"distilling {emulator_id} (OT-KD; cached for the other tasks)")
    manifest = build_emulator(base, spec, profile, cached)  # written atomically: no half-built cache entry
    if manifest.distill is not None:
        log(f"distillation error {manifest.distill.error_before:.3f} -> {manifest.distill.error_after:.3f} "
            f"in {manifest.distill.seconds:.0f} s")
    return cached, manifest


def expected_emulator_id(base: LoadedBase, profile: ImportanceProfile, variant: Variant,
                         train: list[MCExample] | None = None) -> str:
    """The id the current code would build for `variant` (cheap: nothing is built); a calibrated variant's
    id also names its prompt set, the task's training items without their labels (`train`)."""
    plain = variant_spec(base, profile, variant).emulator_id(base.weights_sha256, profile.meta.profile_id, base.dtype)
    if not variant.calibrated:
        return plain
    if train is None:
        raise ValueError(f"{variant.label}: a calibrated emulator's id needs the task's training prompts")
    return calibrated_emulator_id(plain, prompt_set_sha256(unlabelled(train)))


def calibrate_for_task(base: LoadedBase, emu_dir: Path, manifest: EmulatorManifest, train: list[MCExample],
                       out: Path, log: Log, full_lls: list[list[float]] | None = None,
                       test: list[MCExample] | None = None, settings: CalibrationSettings | None = None,
                       ) -> tuple[Path, EmulatorManifest, AgreementReport | None]:
    """The data owner's calibrated emulator: harmonizers refined on the task's training prompts, labels
    dropped. Returns its folder, manifest and (with `full_lls` of `test`) the agreement before calibration."""
    emulator, _, _ = load_emulator(emu_dir)
    before = None
    if full_lls is not None and test is not None:
        before = compare_answers(full_lls, choice_loglikelihoods(emulator, base.tokenizer, unlabelled(test)))
    record = calibrate_harmonizers(base.model, emulator, manifest.layers, base.tokenizer, unlabelled(train),
                                   settings or CalibrationSettings(), on_progress=lambda _, message: log(message))
    log(f"calibration: held-out KL {record.check_kl_before:.4f} -> {record.check_kl_after:.4f} "
        f"({'kept' if record.kept else 'discarded'}) in {record.seconds:.0f} s")
    calibrated = manifest.model_copy(update={
        "emulator_id": calibrated_emulator_id(manifest.emulator_id, record.prompts_sha256), "calibration": record})
    return out, write_emulator(emulator, base.tokenizer, calibrated, out), before


def _variant_row(base: LoadedBase, profile: ImportanceProfile, variant: Variant, items: list[MCExample],
                 test: list[MCExample], budget: Budget, lr: float, known: dict[str, Score], upper: list[Score],
                 workdir: Path, task: str, log: Log, full_lls: list[list[float]] | None = None) -> VariantRow:
    """`items`: the training items; the data owner tunes on them, and a calibrated emulator is refined on
    their prompts without the labels."""
    started = time.perf_counter()
    train = as_training_examples(items)
    spec = variant_spec(base, profile, variant)
    suffix = "-calibrated" if variant.calibrated else ""
    variant_dir = workdir / f"{variant.method}-{variant.alpha:g}-{variant.beta:g}{suffix}"
    emu_dir, manifest = variant_emulator(base, spec, profile, variant_dir, log)
    # emulator-full agreement on the test prompts (their labels unused): the transfer predictor
    prompts = unlabelled(test)
    if full_lls is None:
        full_lls = choice_loglikelihoods(base.model, base.tokenizer, prompts)
    agreement_before = None
    if variant.calibrated:
        emu_dir, manifest, agreement_before = calibrate_for_task(base, emu_dir, manifest, items,
                                                                 variant_dir / "emulator-calibrated", log,
                                                                 full_lls, test)
    emulator, _, _ = load_emulator(emu_dir)
    fidelity = measure_fidelity(base, emulator, manifest, train, budget.fidelity_batches)
    agreement = compare_answers(full_lls, choice_loglikelihoods(emulator, base.tokenizer, prompts))
    fidelity = {**(fidelity or {}), "agreement": agreement.agreement, "answer_kl": agreement.mean_kl}
    if agreement_before is not None:
        fidelity["agreement_before_calibration"] = agreement_before.agreement
        fidelity["answer_kl_before_calibration"] = agreement_before.mean_kl
    log(f"{variant.label}: emulator-full agreement {agreement.agreement:.3f}, answer KL {agreement.mean_kl:.3f}")
    row = VariantRow(variant=variant.label, method=variant.method, alpha=variant.alpha, beta=variant.beta,
                     calibrated=variant.calibrated, calibration=manifest.calibration,
                     emulator_id=manifest.emulator_id, fidelity=fidelity, emulator_zero_shot=Cell.empty(),
                     emulator_fine_tuned=Cell.empty(), plug_in=Cell.empty())
    rows = dict(known)
    tps = []
    for seed, upper_score in zip(budget.seeds, upper, strict=True):
        adapter_dir = variant_dir / f"adapter-seed{seed}"
        tuned = train_adapter(emu_dir, train, None, tuning_for(budget, lr, seed), adapter_dir)
        tps.append(tuned.tokens_per_second)
        del tuned
        adapter = adapter_checks.validate(adapter_dir, base, manifest)
        matrix = evaluate_adapter(base, emulator, manifest, adapter, task, test,
                                  known={**rows, "full_fine_tuning": upper_score})
        rows["emulator_zero_shot"] = matrix.rows["emulator_zero_shot"]  # seed-independent: scored once
        row.emulator_fine_tuned.add(matrix.rows["emulator_fine_tuned"])
        row.plug_in.add(matrix.rows["plug_in"])
        row.matrices.append(matrix.model_dump())
        log(f"{variant.label} seed {seed}: emu ft {matrix.rows['emulator_fine_tuned'].value:.3f} plug-in "
            f"{matrix.rows['plug_in'].value:.3f} (emu zs {matrix.rows['emulator_zero_shot'].value:.3f})")
    row.emulator_zero_shot.add(rows["emulator_zero_shot"])
    row.seconds = time.perf_counter() - started
    row.emulator_tokens_per_second = sum(tps) / len(tps)
    return row


def run_task(base: LoadedBase, profile: ImportanceProfile, data: TaskData[MCExample], variants: list[Variant],
             budget: Budget, workdir: Path, log: Log = lambda _: None,
             lrs: dict[str, LrChoice] | None = None,
             save_partial: Callable[[TaskResult], None] | None = None,
             known_reference: dict[str, Cell] | None = None,
             save_reference: Callable[[str, Cell], None] | None = None) -> TaskResult:
    """All rows of one task. `lrs`: learning rates already chosen for this task (else chosen here).
    `seconds` counts the learning-rate selection too, wherever it ran.

    `save_partial` gets the unfinished task after its reference rows and after every variant row, so a
    stopped run can resume inside the task: its missing variant rows then run with `rerun_variant`,
    against the stored reference rows, learning rate and test items. `known_reference` / `save_reference`:
    the reference rows' seeds of a run stopped before they all finished, kept seed by seed."""
    task = data.spec.name
    train, validation, test = split(data, budget)
    log(f"{len(train)} train, {len(validation)} validation, {len(test)} test examples")
    blocks = adapter_blocks(base, profile)
    if lrs is None or set(lrs) != set(budget.grids):
        lrs = select_task_lrs(base.model, base.tokenizer, blocks, train, validation,
                              tuning_for(budget, budget.lr_grid[0], budget.seeds[0]), budget.grids, log)
    started = time.perf_counter()  # the selection's own time is in its LrChoice.seconds
    log("learning rates " + ", ".join(f"{k} {c.lr:g}" for k, c in lrs.items()))

    full_zero = score_model(base.model, base.tokenizer, test)
    zero_cell = Cell.empty()
    zero_cell.add(full_zero)
    log(f"full zero-shot acc {full_zero.value:.3f}")
    reference = _reference_rows(base, blocks, train, test, budget, lrs, log, known_reference, save_reference)
    upper_cell, upper_scores = reference["adapter_tuning_full_model"]
    result = TaskResult(task=task, chance=sum(1 / len(e.choices) for e in test) / len(test), n_train=len(train),
                        n_valid=len(validation), n_test=len(test), seeds=list(budget.seeds), lr=lrs,
                        full_zero_shot=zero_cell, adapter_tuning_full_model=upper_cell,
                        full_parameter_fine_tuning=reference["full_parameter_fine_tuning"][0], rows=[],
                        seconds=time.perf_counter() - started + sum(c.seconds for c in lrs.values()),
                        validation_majority=majority_share(validation))
    if save_partial is not None:
        save_partial(result)
    full_lls = choice_loglikelihoods(base.model, base.tokenizer, unlabelled(test))
    for v in variants:
        row = _variant_row(base, profile, v, train_items(data, budget), test, budget, lrs["adapter"].lr,
                           {"full_zero_shot": full_zero}, upper_scores, workdir / task, task, log, full_lls)
        result.rows.append(row)
        result.seconds += row.seconds
        if save_partial is not None:
            save_partial(result)
    return result


def _score(cell: Cell, seed_index: int) -> Score:
    """A stored cell's score of one seed, with its per-item correctness (for the evaluation matrix)."""
    correct = [int(c) for c in cell.correct[seed_index]]
    return Score(metric="acc", value=cell.acc[seed_index], n=len(correct), correct=correct)


def rerun_variant(base: LoadedBase, profile: ImportanceProfile, data: TaskData[MCExample], result: TaskResult,
                  variant: Variant, budget: Budget, workdir: Path, log: Log = lambda _: None) -> VariantRow:
    """One variant's row of a finished task again (its emulator changed since, e.g. a new build step),
    against the task's stored reference rows, learning rate and test items: nothing else re-runs."""
    train, _, test = split(data, budget)
    if len(test) != result.n_test or len(train) != result.n_train:
        raise ValueError(f"{result.task}: the stored task has {result.n_train} train / {result.n_test} test "
                         f"examples, the pack now gives {len(train)} / {len(test)}")
    upper = [_score(result.adapter_tuning_full_model, i) for i in range(len(budget.seeds))]
    row = _variant_row(base, profile, variant, train_items(data, budget), test, budget, result.lr["adapter"].lr,
                       {"full_zero_shot": _score(result.full_zero_shot, 0)}, upper, workdir / result.task,
                       result.task, log)
    result.seconds += row.seconds
    return row
