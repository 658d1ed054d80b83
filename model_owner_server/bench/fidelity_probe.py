"""Emulator fidelity for the benchmark tables: perplexity, KD error on ordinary tokens and the
adapter-gradient cosine per adapter block (a transfer proxy that needs no tuning run).

The metrics live in `model_owner_server.emulators.fidelity.emulator_fidelity` (stage 1's owner);
`model_owner_server.bench.fidelity_metrics` is the benchmark's own fallback. Both are imported
lazily, so the benchmark runs (with the fidelity columns empty) where neither exists.
"""

from __future__ import annotations

import importlib
from typing import Any

from transformers import PreTrainedModel

from model_owner_server.base_models import LoadedBase
from shared.data_formats import TrainExample
from shared.manifest import EmulatorManifest

PROVIDERS = ("model_owner_server.emulators.fidelity", "model_owner_server.bench.fidelity_metrics")


def _provider() -> Any | None:
    for name in PROVIDERS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # the module exists but something it imports does not: a real error
                raise
            continue
        function = getattr(module, "emulator_fidelity", None)
        if function is not None:
            return function
    return None


def measure_fidelity(base: LoadedBase, emulator: PreTrainedModel, manifest: EmulatorManifest,
                     train: list[TrainExample], n_batches: int) -> dict[str, Any] | None:
    """FidelityReport as JSON (`grad_cosine` keys are full-model block indices, as strings), or None."""
    function = _provider()
    if function is None or n_batches <= 0:
        return None
    report = function(base, emulator, manifest, train, n_batches=n_batches)
    return dict(report.model_dump(mode="json"))
