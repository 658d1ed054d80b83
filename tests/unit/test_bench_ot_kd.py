"""`bench ot-kd` on tiny-llama: three emulators side by side, the distilled one built once and reused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.offsite_tuning import ot_kd
from tests.unit.bench_helpers import toy_task
from tests.unit.helpers import tiny_profile


def test_ot_kd_rows_and_the_cached_distillation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import model_owner_server.emulators.build as build
    import model_owner_server.emulators.distill as distill

    fast = distill.DistillSettings(steps=4, batch_size=2, seq_len=32, check_sequences=2)
    monkeypatch.setattr(distill, "DistillSettings", lambda: fast)  # the default settings, made small
    monkeypatch.setattr(ot_kd, "load_mc_task", lambda name: toy_task(name))
    base, profile = tiny_profile()
    result = ot_kd.run(base, profile, 0.5, "toy", 1, tmp_path, log=lambda _: None)
    rows = {row["variant"].split(" ")[0]: row for row in result["rows"]}
    assert set(rows) == {"ot-kd", "uniform", "scaleot"}
    record = rows["ot-kd"]["distill"]
    assert record["steps"] == 4 and record["error_after"] <= record["error_before"]
    assert rows["uniform"]["distill"] is None and rows["ot-kd"]["emulator_id"] != rows["uniform"]["emulator_id"]
    for row in rows.values():
        assert row["perplexity"] > 0 and row["kd_error"] >= 0
        assert set(row["grad_cosine"]) == {"0", str(base.num_layers - 1)}  # the adapter blocks
    stem = tmp_path / f"ot-kd-{base.name}"
    assert json.loads(stem.with_name(stem.name + ".json").read_text())["rows"] == result["rows"]
    assert "ot-kd (alpha 0.5, beta 0)" in stem.with_name(stem.name + ".md").read_text()

    def no_second_distillation(*_: Any, **__: Any) -> None:
        raise AssertionError("the cached distilled emulator is reused")

    monkeypatch.setattr(build, "distill_kept_blocks", no_second_distillation)
    again = ot_kd.run(base, profile, 0.5, "toy", 1, tmp_path, log=lambda _: None)
    assert again["rows"][0]["distill"] == record
