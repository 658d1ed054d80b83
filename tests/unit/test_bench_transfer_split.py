"""The transfer-split diagnostic on tiny-llama: the plug-in path check, and the half-and-half adapters
built from the right blocks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmarks.offsite_tuning import transfer_split
from benchmarks.offsite_tuning.task_run import Variant
from model_owner_server.adapter_checks import CheckedAdapter
from shared.blocks import find_block_stack
from tests.unit.bench_helpers import toy_budget, toy_task
from tests.unit.helpers import tiny_profile


def test_halves_come_from_the_right_adapters_and_the_plug_in_path_agrees(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base, profile = tiny_profile()
    stack = find_block_stack(base.model).path
    original = {k: v.clone() for k, v in base.model.state_dict().items()}
    plugged: list[dict[str, torch.Tensor]] = []
    real_plug_in = transfer_split.plug_in

    def spy(base_: Any, adapter: CheckedAdapter) -> Any:
        plugged.append(adapter.state)
        return real_plug_in(base_, adapter)

    monkeypatch.setattr(transfer_split, "plug_in", spy)
    result = transfer_split.run(base, profile, toy_task(), "toy", Variant("scaleot", 0.0, 0.5),
                                toy_budget(seeds=(0,)), 1e-2, tmp_path, "tiny")
    cfg = profile.meta.config
    n = base.num_layers
    bottom, top = list(range(cfg.adapter_bottom)), list(range(n - cfg.adapter_top, n))
    assert result["adapter_blocks"] == {"bottom": bottom, "top": top}
    assert result["path_agrees"] is True  # the full-model adapter scores the same through the owner's path
    rows = result["rows"]
    assert rows["full_tuned"].correct == rows["full_tuned_plugged"].correct
    assert all(len(rows[r].acc) == 1 for r in transfer_split.ROWS)

    # order of plug_in calls: the full-model adapter, its two halves, then the five emulator mixes
    full, full_bottom, full_top, emu, bottom_only, top_only, emu_top_full_bottom, emu_bottom_full_top = plugged

    def block(state: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
        return {k: v for k, v in state.items() if k.startswith(f"{stack}.{i}.")}

    def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    assert set(emu) == set(full) and all(set(s) == set(emu) for s in plugged)
    for i in bottom:
        assert not same(block(emu, i), block(original, i)) and not same(block(full, i), block(emu, i))
        assert same(block(bottom_only, i), block(emu, i)) and same(block(top_only, i), block(original, i))
        assert same(block(full_bottom, i), block(full, i)) and same(block(full_top, i), block(original, i))
        assert same(block(emu_top_full_bottom, i), block(full, i))
        assert same(block(emu_bottom_full_top, i), block(emu, i))
    for i in top:
        assert same(block(bottom_only, i), block(original, i)) and same(block(top_only, i), block(emu, i))
        assert same(block(full_bottom, i), block(original, i)) and same(block(full_top, i), block(full, i))
        assert same(block(emu_top_full_bottom, i), block(emu, i))
        assert same(block(emu_bottom_full_top, i), block(full, i))
    assert all(torch.equal(v, original[k]) for k, v in base.model.state_dict().items())  # base left untouched

    updates = result["updates"][0]
    assert set(updates) == {str(i) for i in bottom + top}
    assert all(-1 <= u["update_cosine"] <= 1 and u["full_relative_update"] > 0 and u["emulator_relative_update"] > 0
               for u in updates.values())
    answers = result["answers"]
    assert answers["full_zero_shot"]["same_as_full_zero_shot"] == 1.0
    assert answers["full_tuned"] == answers["full_tuned_plugged"]
    assert all(abs(sum(a["position_share"]) - 1) < 1e-9 and len(a["position_share"]) == 3 for a in answers.values())
    assert transfer_split.answer_profile([[0, 1, 1, 2], [1, 1, 1, 1]], [1, 1, 0, 0], 3) == {
        "position_share": [0.125, 0.75, 0.125], "same_as_full_zero_shot": 0.375}
    written = json.loads((tmp_path / "transfer-split-tiny.json").read_text())
    assert written["rows"]["plug_in"]["acc"] == rows["plug_in"].acc and "plug_in" not in written["vs_plug_in"]
    assert "item by item: **yes**" in (tmp_path / "transfer-split-tiny.md").read_text()


def test_a_calibrated_run_reports_agreement_before_and_after(tmp_path: Path) -> None:
    from model_owner_server.emulators.task_calibration import CalibrationSettings

    base, profile = tiny_profile()
    settings = CalibrationSettings(steps=3, batch_size=2, max_len=64)
    result = transfer_split.run(base, profile, toy_task(), "toy", Variant("scaleot", 0.0, 0.5),
                                toy_budget(seeds=(0,)), 1e-2, tmp_path, "tiny-calibrated", calibration=settings)
    record = result["calibration"]
    assert record is not None and record["steps"] == 3 and len(record["curve"]) == 3
    for key in ("agreement", "agreement_before_calibration"):
        assert 0 <= result[key]["agreement"] <= 1 and result[key]["mean_kl"] >= 0
        assert result[key]["n_items"] == len(result["rows"]["full_zero_shot"].correct[0])
    text = (tmp_path / "transfer-split-tiny-calibrated.md").read_text()
    assert "Emulator-full agreement on the test prompts" in text and "before calibration" in text
    assert result["path_agrees"] is True
