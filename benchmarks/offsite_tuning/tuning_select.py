"""Tuning learning rate chosen on the VALIDATION split, never on the test split.

Per task, one learning rate for adapter tuning and one for full-parameter fine-tuning, each picked
from a small grid by validation accuracy after tuning the FULL model (seed = the first tuning seed):
- adapter tuning: the adapter blocks tuned on the full model, the upper bound's own configuration.
  The chosen rate is then used for every row that tunes the adapter (every emulator and the
  upper bound), so paired differences between rows differ only in what the adapter was tuned
  through, not in the rate. Choosing per emulator would cost one grid per variant and let the rate
  absorb part of the emulator's difference.
- full-parameter fine-tuning: its own grid (all 135M parameters want a smaller rate).
Highest validation accuracy wins; ties go to the smaller rate. The functions below never receive
the test split.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from pydantic import BaseModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from benchmarks.offsite_tuning.full_tuning import tuned_copy
from data_owner_client.tuning.config import TuningConfig
from model_owner_server.evaluation.matrix import score_model
from shared.data_formats import MCExample, TrainExample

TUNING_KINDS = ("adapter", "full_parameter")


class LrChoice(BaseModel):
    kind: str
    lr: float
    validation_acc: dict[str, float]  # f"{lr:g}" -> validation accuracy
    n_valid: int
    seed: int
    seconds: float = 0.0  # wall time of the selection's tuning runs and validation scoring


def pick_best(scores: Mapping[float, float]) -> float:
    """The rate of highest score; ties go to the smaller rate."""
    if not scores:
        raise ValueError("an empty learning-rate grid")
    return min(scores, key=lambda lr: (-scores[lr], lr))


def select_lr(kind: str, grid: Sequence[float], evaluate: Callable[[float], float], n_valid: int,
              seed: int, known: Mapping[str, float] | None = None) -> LrChoice:
    """Evaluate every rate of the grid with `evaluate(lr) -> validation accuracy` and keep the best
    (a grid of one rate is taken as given, without a tuning run). `known`: scores of an interrupted
    selection (f"{lr:g}" -> accuracy), used instead of running those rates again; `seconds` then counts
    only the rates run now."""
    rates = sorted(set(grid))
    if len(rates) == 1:
        return LrChoice(kind=kind, lr=rates[0], validation_acc={}, n_valid=0, seed=seed)
    known = known or {}
    started = time.perf_counter()
    scores = {lr: known[f"{lr:g}"] if f"{lr:g}" in known else evaluate(lr) for lr in rates}
    return LrChoice(kind=kind, lr=pick_best(scores), validation_acc={f"{lr:g}": s for lr, s in scores.items()},
                    n_valid=n_valid, seed=seed, seconds=time.perf_counter() - started)


def select_task_lrs(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, adapter_blocks: list[int],
                    train: list[TrainExample], validation: list[MCExample], tuning: TuningConfig,
                    grids: Mapping[str, Sequence[float]],
                    log: Callable[[str], None] = lambda _: None,
                    known: Mapping[str, Mapping[str, float]] | None = None,
                    on_score: Callable[[str, float, float], None] | None = None) -> dict[str, LrChoice]:
    """One LrChoice per tuning kind in `grids` (adapter / full_parameter), from the validation split.
    `known` (kind -> f"{lr:g}" -> accuracy): rates scored before an interruption, not run again;
    `on_score(kind, lr, accuracy)` is called after each rate, so a caller can keep them."""
    if not validation and any(len(set(g)) > 1 for g in grids.values()):
        raise ValueError("learning-rate selection needs validation examples")
    known = known or {}
    choices: dict[str, LrChoice] = {}
    for kind, grid in grids.items():
        for lr_text, acc in sorted(known.get(kind, {}).items()):
            log(f"lr selection {kind} lr {lr_text}: validation acc {acc:.3f} (from an earlier run)")

        def evaluate(lr: float, kind: str = kind) -> float:
            tuned = tuned_copy(model, tokenizer, kind, adapter_blocks, train,
                               tuning.model_copy(update={"lr": lr}))
            acc = score_model(tuned, tokenizer, validation).value
            log(f"lr selection {kind} lr {lr:g}: validation acc {acc:.3f}")
            if on_score is not None:
                on_score(kind, lr, acc)
            return acc

        choices[kind] = select_lr(kind, grid, evaluate, len(validation), tuning.seed, known.get(kind))
    return choices
