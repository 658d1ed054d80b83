"""Evaluate one adapter on one task: every row of the matrix the owner can compute."""

from __future__ import annotations

from collections.abc import Callable

from transformers import PreTrainedModel

from model_owner_server.adapter_checks import CheckedAdapter
from model_owner_server.base_models import LoadedBase
from model_owner_server.evaluation.matrix import EvaluationMatrix, Score, score_model
from model_owner_server.plug_in import changes_outputs, emulator_with_adapter, plug_in
from shared.data_formats import MCExample, TrainExample
from shared.manifest import EmulatorManifest
from shared.scoring import NonFiniteScores

RowProgress = Callable[[str, int, int], None]  # (row, done, total)
WITH_ADAPTER = {"emulator_fine_tuned": "the emulator with the adapter",
                "plug_in": "the full model with the adapter plugged in"}


class AdapterRefused(ValueError):
    """The adapter makes a model produce non-finite scores: the evaluation fails with this reason instead
    of reporting an accuracy computed from NaN."""


def evaluate_adapter(
    base: LoadedBase,
    emulator: PreTrainedModel,
    manifest: EmulatorManifest,
    adapter: CheckedAdapter,
    task: str,
    examples: list[MCExample] | list[TrainExample],
    known: dict[str, Score] | None = None,
    progress: RowProgress | None = None,
    batch_size: int = 16,
) -> EvaluationMatrix:
    """Rows already known (e.g. the full model's zero-shot score, cached per task) are reused."""
    rows = dict(known or {})

    def run(row: str, model: PreTrainedModel) -> None:
        if row not in rows:
            hook = (lambda done, total: progress(row, done, total)) if progress else None
            try:
                rows[row] = score_model(model, base.tokenizer, examples, batch_size=batch_size, progress=hook)
            except NonFiniteScores as exc:
                if row not in WITH_ADAPTER:
                    raise
                raise AdapterRefused(f"adapter refused: {WITH_ADAPTER[row]} produces non-finite scores on this data "
                                     f"({exc}), so no accuracy is reported; its weights overflow the model: retrain "
                                     "it (e.g. with a lower learning rate) and upload it again") from exc

    run("full_zero_shot", base.model)
    run("emulator_zero_shot", emulator)
    tuned_emulator = emulator_with_adapter(emulator, manifest, adapter)
    run("emulator_fine_tuned", tuned_emulator)
    del tuned_emulator
    plugged = plug_in(base, adapter)
    changed = changes_outputs(base.model, plugged, base.tokenizer)
    run("plug_in", plugged)
    del plugged
    metric = next(iter(rows.values())).metric
    return EvaluationMatrix(task=task, metric=metric, rows=rows, adapter_changes_outputs=changed).finish()
