"""Emulator fidelity for the benchmark tables: perplexity, KD error on ordinary tokens and the
adapter-gradient cosine per adapter block (a transfer proxy that needs no tuning run); the metrics
live in `model_owner_server.emulators.fidelity` (stage 1's owner)."""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedModel

from model_owner_server.base_models import LoadedBase
from model_owner_server.emulators.fidelity import emulator_fidelity
from shared.data_formats import TrainExample
from shared.manifest import EmulatorManifest


def measure_fidelity(base: LoadedBase, emulator: PreTrainedModel, manifest: EmulatorManifest,
                     train: list[TrainExample], n_batches: int) -> dict[str, Any] | None:
    """FidelityReport as JSON (`grad_cosine` keys are full-model block indices, as strings), or None."""
    if n_batches <= 0:
        return None
    report = emulator_fidelity(base, emulator, manifest, train, n_batches=n_batches)
    return dict(report.model_dump(mode="json"))
