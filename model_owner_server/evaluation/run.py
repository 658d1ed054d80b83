"""Evaluate one adapter on one task: every row of the matrix the owner can compute."""

from __future__ import annotations

from collections.abc import Callable

from transformers import PreTrainedModel

from model_owner_server.base_models import LoadedBase
from model_owner_server.evaluation.matrix import EvaluationMatrix, Score, score_model
from model_owner_server.plug_in import CheckedAdapter, changes_outputs, emulator_with_adapter, plug_in
from shared.data_formats import MCExample, TrainExample
from shared.manifest import EmulatorManifest

RowProgress = Callable[[str, int, int], None]  # (row, done, total)


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
            rows[row] = score_model(model, base.tokenizer, examples, batch_size=batch_size, progress=hook)

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
