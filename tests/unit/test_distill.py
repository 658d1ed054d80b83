"""Offsite-Tuning's distilled emulator (OT-KD: uniform LayerDrop, kept blocks distilled), on tiny models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model_owner_server.base_models import load_base_model
from model_owner_server.emulators.build import build_emulator, generate_emulator
from model_owner_server.emulators.distill import DistillSettings
from model_owner_server.emulators.fidelity import held_out_windows, kd_error
from model_owner_server.emulators.spec import EmulatorSpec
from shared.artifacts import load_emulator
from shared.blocks import find_block_stack
from shared.manifest import EmulatorOptions, LayerKind

FAST = DistillSettings(steps=40, batch_size=4, seq_len=64, lr=1e-3, check_sequences=8)


def _spec(distill: bool, method: str = "uniform") -> EmulatorSpec:
    return EmulatorSpec(base_model="tiny-llama", method=method, alpha=0.5, adapter_bottom=1, adapter_top=1,
                        options=EmulatorOptions(distill=distill))


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_distillation_lowers_the_error_and_touches_only_the_kept_middle_blocks() -> None:
    base = load_base_model("tiny-llama")
    full_before = _state(base.model)
    progress: list[float] = []
    distilled, manifest = generate_emulator(base, _spec(True), None, distill_settings=FAST,
                                            on_progress=lambda f, _m: progress.append(f))
    plain, plain_manifest = generate_emulator(base, _spec(False), None)
    assert manifest.distill is not None and plain_manifest.distill is None
    assert manifest.distill.error_after < manifest.distill.error_before
    assert progress[-1] == 1.0 and progress == sorted(progress)
    windows = held_out_windows(base.tokenizer, window=64, n_windows=8)  # documents the distillation never sees
    assert kd_error(base.model, distilled, 1, windows) < kd_error(base.model, plain, 1, windows)
    a, b = _state(distilled), _state(plain)
    path = find_block_stack(distilled).path
    for entry in manifest.layers:
        prefix = f"{path}.{entry.emulator_index}."
        same = all(torch.equal(a[k], b[k]) for k in a if k.startswith(prefix))
        assert same == (entry.kind == LayerKind.adapter), entry  # adapter blocks stay the full model's
    outside = [k for k in a if not k.startswith(f"{path}.")]
    assert outside and all(torch.equal(a[k], b[k]) for k in outside)  # embeddings, final norm, head
    assert all(torch.equal(v, base.model.state_dict()[k]) for k, v in full_before.items())  # base untouched
    assert all(p.requires_grad for p in distilled.parameters())  # left as a fresh model is


def test_a_distillation_that_does_not_help_is_discarded() -> None:
    base = load_base_model("tiny-llama")
    wild = DistillSettings(steps=5, batch_size=2, seq_len=32, lr=50.0, check_sequences=4)
    distilled, manifest = generate_emulator(base, _spec(True), None, distill_settings=wild)
    plain, _ = generate_emulator(base, _spec(False), None)
    assert manifest.distill is not None and manifest.distill.error_after == manifest.distill.error_before
    a, b = _state(distilled), _state(plain)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ids_and_the_artifact() -> None:
    uniform = _spec(False)
    assert uniform.emulator_id("sha", None) == EmulatorSpec(
        base_model="tiny-llama", method="uniform", alpha=0.5, adapter_bottom=1, adapter_top=1).emulator_id("sha", None)
    assert _spec(True).emulator_id("sha", None) != uniform.emulator_id("sha", None)
    assert not _spec(True, method="scaleot").distills  # a uniform-only option
    assert _spec(True, method="scaleot").emulator_id("sha", "p") == _spec(False, "scaleot").emulator_id("sha", "p")


def test_the_distilled_artifact_loads_and_generates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import model_owner_server.emulators.distill as distill

    monkeypatch.setattr(distill, "DistillSettings", lambda: FAST)  # the service's default settings, made small
    base = load_base_model("tiny-llama")
    manifest = build_emulator(base, _spec(True), None, tmp_path / "emu")
    assert manifest.distill is not None
    emulator, _, loaded = load_emulator(tmp_path / "emu")
    assert loaded.distill == manifest.distill and loaded.emulator_id == manifest.emulator_id
    out = emulator.generate(input_ids=torch.tensor([[1, 2, 3]]), max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 7)


def test_the_profile_counts_in_the_id_only_for_emulators_that_use_one() -> None:
    assert _spec(True).emulator_id("sha", "p") == _spec(True).emulator_id("sha", None)
    assert _spec(False).emulator_id("sha", "p") == _spec(False).emulator_id("sha", None)
    assert _spec(False, "scaleot").emulator_id("sha", "p") != _spec(False, "scaleot").emulator_id("sha", None)
