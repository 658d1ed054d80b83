"""Tiny tasks and budgets for the benchmark tests (tiny-llama, synthetic multiple choice)."""

from __future__ import annotations

from benchmarks.offsite_tuning.task_run import Budget
from data_owner_client.tuning.config import TuningConfig
from shared.data_formats import MCExample
from shared.tasks import TASKS, TaskData

COLOURS = ["red", "green", "blue"]


def toy_items(prefix: str, n: int, offset: int = 0) -> list[MCExample]:
    return [MCExample(context=f"{prefix} {i}: the colour is", choices=COLOURS, label=(i + offset) % 3)
            for i in range(n)]


def toy_task(name: str = "toy", n_test: int = 6) -> TaskData[MCExample]:
    spec = TASKS["social_iqa"].model_copy(update={"name": name})
    return TaskData(spec=spec, train=toy_items("Train", 8), validation=toy_items("Valid", 4, 1),
                    test=toy_items("Test", n_test, 2))


def toy_budget(**overrides: object) -> Budget:
    values: dict[str, object] = {
        "n_train": 8, "n_valid": 4, "n_test": None, "seeds": (0, 1),
        "tuning": TuningConfig(epochs=1, lr=1e-2, batch_size=4, max_len=32),
        "lr_grid": (1e-3, 1e-2), "full_lr_grid": (1e-3,), "fidelity_batches": 0,
    }
    values.update(overrides)
    return Budget(**values)  # type: ignore[arg-type]
