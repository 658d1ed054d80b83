"""The harmonizer re-fit after SRC (stage 2, beta > 0), on tiny random models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model_owner_server.base_models import load_base_model
from model_owner_server.emulators.build import build_emulator, generate_emulator
from model_owner_server.emulators.calibration import capture_middle
from model_owner_server.emulators.fidelity import held_out_windows, kd_error
from model_owner_server.emulators.spec import EmulatorSpec
from model_owner_server.emulators.src_refit import _inputs_at
from model_owner_server.tiny_models import TINY_MODELS
from shared.blocks import find_block_stack
from shared.manifest import WEIGHTS_NAME, EmulatorOptions, LayerKind
from tests.unit.helpers import tiny_profile


def _spec(beta: float, refit: bool = True, alpha: float = 0.5) -> EmulatorSpec:
    return EmulatorSpec(base_model="tiny-llama", alpha=alpha, beta=beta, adapter_bottom=1, adapter_top=1,
                        options=EmulatorOptions(refit=refit))


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_refit_lowers_the_error_against_the_full_model_on_held_out_text() -> None:
    base, profile = tiny_profile()
    windows = held_out_windows(base.tokenizer, window=64, n_windows=8)  # documents the re-fit never sees
    progress: list[float] = []
    refitted, manifest = generate_emulator(base, _spec(0.5), profile, on_progress=lambda f, _m: progress.append(f))
    plain, plain_manifest = generate_emulator(base, _spec(0.5, refit=False), profile)
    assert manifest.refit is not None and plain_manifest.refit is None
    harmonized = [e.full_index for e in manifest.layers if e.kind == LayerKind.harmonizer]
    assert sorted(manifest.refit.error_after) == harmonized
    assert all(manifest.refit.error_after[i] <= manifest.refit.error_before[i] for i in harmonized)
    assert progress[0] == 0.0 and progress[-1] == 1.0 and progress == sorted(progress)
    err_refit, err_plain = kd_error(base.model, refitted, 1, windows), kd_error(base.model, plain, 1, windows)
    assert err_refit < 0.9 * err_plain, (err_refit, err_plain)
    # only the harmonizers change; the compressed kept blocks are SRC's
    a, b = _state(refitted), _state(plain)
    emu_blocks = find_block_stack(refitted)
    for entry in manifest.layers:
        prefix = f"{emu_blocks.path}.{entry.emulator_index}."
        same = all(torch.equal(a[k], b[k]) for k in a if k.startswith(prefix))
        assert same == (entry.kind != LayerKind.harmonizer), entry


def test_beta_zero_and_refit_off_build_what_they_built_before(tmp_path: Path) -> None:
    # ids from before the re-fit existed: beta 0, or the option off, keep them
    assert EmulatorSpec(base_model="x", alpha=0.5).emulator_id("sha", "p") == "emu-e5963504a833854334c0"
    off = EmulatorSpec(base_model="x", alpha=0.5, beta=0.5, options=EmulatorOptions(refit=False))
    assert off.emulator_id("sha", "p") == "emu-dd3ac99dad6d0f63ddb5"
    assert EmulatorSpec(base_model="x", alpha=0.5, beta=0.5).emulator_id("sha", "p") != "emu-dd3ac99dad6d0f63ddb5"
    uniform = EmulatorSpec(base_model="x", method="uniform", alpha=0.5, beta=0.5)
    assert uniform.emulator_id("sha", None) == "emu-ba31c43e8da7f41602e3"  # no harmonizers: nothing to re-fit
    assert uniform.model_copy(update={"options": EmulatorOptions(refit=False)}).emulator_id("sha", None) == \
        "emu-ba31c43e8da7f41602e3"

    base, profile = tiny_profile()
    on = build_emulator(base, _spec(0.0), profile, tmp_path / "on")
    off_zero = build_emulator(base, _spec(0.0, refit=False), profile, tmp_path / "off")
    assert on.emulator_id == off_zero.emulator_id and on.refit is None
    assert on.files[WEIGHTS_NAME].sha256 == off_zero.files[WEIGHTS_NAME].sha256
    # beta > 0 with the option off: the stage-1 harmonizers, untouched
    emulator, manifest = generate_emulator(base, _spec(0.5, refit=False), profile)
    blocks = find_block_stack(emulator).blocks
    for entry in manifest.layers:
        if entry.kind == LayerKind.harmonizer:
            expected = profile.harmonizer_state(entry.full_index)
            got = blocks[entry.emulator_index].state_dict()
            assert all(torch.equal(got[k], v) for k, v in expected.items())


def test_refit_is_deterministic_and_recorded(tmp_path: Path) -> None:
    base, profile = tiny_profile()
    a = build_emulator(base, _spec(0.25), profile, tmp_path / "a")
    b = build_emulator(base, _spec(0.25), profile, tmp_path / "b")
    assert a.emulator_id == b.emulator_id
    assert a.files[WEIGHTS_NAME].sha256 == b.files[WEIGHTS_NAME].sha256
    assert a.refit is not None and a.refit.seed == profile.meta.config.seed
    assert a.options.refit


@pytest.mark.parametrize("name", TINY_MODELS)
def test_replayed_inputs_equal_a_full_forward(name: str) -> None:
    """Replaying the state below the previous harmonizer gives exactly what the emulator computes."""
    base = load_base_model(name)
    spec = EmulatorSpec(base_model=name, alpha=0.5, beta=0.5, adapter_bottom=1, adapter_top=1,
                        options=EmulatorOptions(importance=False, refit=False))
    emulator, manifest = generate_emulator(base, spec, profile=None)
    blocks = find_block_stack(emulator).blocks
    torch.manual_seed(0)
    with torch.no_grad():  # untrained harmonizers are the identity; make them do something
        for entry in manifest.layers:
            if entry.kind == LayerKind.harmonizer:
                blocks[entry.emulator_index].up.weight.normal_(0, 0.05)
    harmonized = [e.emulator_index for e in manifest.layers if e.kind == LayerKind.harmonizer]
    assert len(harmonized) >= 2
    sequences = torch.randint(0, 200, (5, 40), generator=torch.Generator().manual_seed(1))
    boundary, cached = -1, None
    for e_idx in harmonized:
        seen = _inputs_at(emulator, e_idx, boundary, cached, sequences, batch_size=2)
        reference = capture_middle(emulator, [e_idx], sequences, batch_size=2).states[0]
        torch.testing.assert_close(torch.cat(seen).float(), reference, rtol=1e-5, atol=1e-5)
        with torch.no_grad():
            cached = [blocks[e_idx](x) for x in seen]
        boundary = e_idx
    assert find_block_stack(emulator).blocks is blocks  # the block stack is put back
