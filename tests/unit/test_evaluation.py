from __future__ import annotations

from pathlib import Path

import pytest

from data_owner_client.tuning.config import TuningConfig
from data_owner_client.tuning.local import train_adapter
from model_owner_server import adapter_checks
from model_owner_server.base_models import load_base_model
from model_owner_server.emulators.build import build_emulator
from model_owner_server.emulators.spec import EmulatorSpec
from model_owner_server.evaluation.matrix import EvaluationMatrix, Score
from model_owner_server.evaluation.run import evaluate_adapter
from shared.artifacts import load_emulator
from shared.data_formats import MCExample, TrainExample

TEST = [MCExample(context=f"Item {i}: the colour is", choices=["red", "green", "blue"], label=i % 3)
        for i in range(9)]
TRAIN = [TrainExample(context=e.context, target=" " + e.choices[e.label]) for e in TEST]


def test_gaps_are_oriented_so_positive_favours_plug_in() -> None:
    m = EvaluationMatrix(task="t", metric="acc", rows={
        "emulator_fine_tuned": Score(metric="acc", value=0.40), "plug_in": Score(metric="acc", value=0.46),
        "full_fine_tuning": Score(metric="acc", value=0.47)}).finish()
    assert m.privacy_gap == pytest.approx(6.0) and m.utility_gap == pytest.approx(1.0)
    ppl = EvaluationMatrix(task="lm", metric="ppl", rows={
        "emulator_fine_tuned": Score(metric="ppl", value=40.0), "plug_in": Score(metric="ppl", value=20.0)}).finish()
    assert ppl.privacy_gap is not None and ppl.privacy_gap > 0 and ppl.utility_gap is None


def test_matrix_rows_on_a_tiny_model(tmp_path: Path) -> None:
    base = load_base_model("tiny-llama")
    spec = EmulatorSpec(base_model="tiny-llama", method="uniform", alpha=0.5, adapter_bottom=1, adapter_top=1)
    manifest = build_emulator(base, spec, None, tmp_path / "emu")
    train_adapter(tmp_path / "emu", TRAIN, None, TuningConfig(epochs=1, lr=1e-2, batch_size=4), tmp_path / "ad")
    emulator, _, _ = load_emulator(tmp_path / "emu")
    seen: set[str] = set()
    adapter = adapter_checks.validate(tmp_path / "ad", base, manifest)
    matrix = evaluate_adapter(base, emulator, manifest, adapter, "toy", TEST,
                              progress=lambda row, done, total: seen.add(row))
    assert set(matrix.rows) == {"full_zero_shot", "emulator_zero_shot", "emulator_fine_tuned", "plug_in"}
    assert seen == set(matrix.rows)
    for score in matrix.rows.values():
        assert score.metric == "acc" and score.n == 9 and 0 <= score.value <= 1
    assert matrix.adapter_changes_outputs is True
    assert matrix.privacy_gap == pytest.approx(
        100 * (matrix.rows["plug_in"].value - matrix.rows["emulator_fine_tuned"].value))
