"""Integration: tune an adapter on a real SmolLM2 emulator with real task data, plug it in, score it."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_owner_client.tuning.config import TuningConfig
from data_owner_client.tuning.local import train_adapter
from model_owner_server import adapter_checks
from model_owner_server.base_models import BaseModelError, load_base_model
from model_owner_server.emulators.build import build_emulator
from model_owner_server.emulators.spec import EmulatorSpec
from model_owner_server.evaluation.run import evaluate_adapter
from shared.artifacts import load_emulator
from shared.assets import AssetError
from shared.tasks import as_training_examples, load_mc_task

pytestmark = pytest.mark.real


def test_tune_plug_in_and_evaluate_on_the_real_model(tmp_path: Path) -> None:
    try:
        base = load_base_model("smollm2-135m")
        task = load_mc_task("goal_step_wikihow_goal")
    except (BaseModelError, AssetError) as exc:
        pytest.skip(f"real model or data unavailable: {exc}")
    spec = EmulatorSpec(base_model="smollm2-135m", method="uniform", alpha=0.5)
    manifest = build_emulator(base, spec, None, tmp_path / "emu")
    train = as_training_examples(task.train[:16])
    result = train_adapter(tmp_path / "emu", train, None, TuningConfig(epochs=1, batch_size=4, max_steps=2, lr=1e-4),
                           tmp_path / "adapter")
    assert result.steps == 2 and result.tokens_per_second > 0
    adapter = adapter_checks.validate(tmp_path / "adapter", base, manifest)
    assert {int(k.split(".")[2]) for k in adapter.state} == {0, 1, 28, 29}
    emulator, _, _ = load_emulator(tmp_path / "emu")
    matrix = evaluate_adapter(base, emulator, manifest, adapter, "goal_step_wikihow_goal", task.test[:8])
    assert matrix.adapter_changes_outputs
    assert set(matrix.rows) == {"full_zero_shot", "emulator_zero_shot", "emulator_fine_tuned", "plug_in"}
    assert all(s.n == 8 for s in matrix.rows.values())
