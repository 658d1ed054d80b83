"""Task calibration (harmonizers refined on unlabelled prompts toward the full model) and the
emulator-full agreement metric, on a tiny model."""

from __future__ import annotations

import math

import pytest
import torch

from model_owner_server.base_models import LoadedBase
from model_owner_server.emulators.build import generate_emulator
from model_owner_server.emulators.profile import ImportanceProfile
from model_owner_server.emulators.spec import EmulatorSpec
from model_owner_server.emulators.task_calibration import (
    CalibrationCancelled,
    CalibrationSettings,
    calibrate_harmonizers,
    calibrated_emulator_id,
    prompt_set_sha256,
)
from model_owner_server.evaluation.agreement import compare_answers, measure_agreement
from shared.blocks import find_block_stack
from shared.data_formats import Prompt
from shared.manifest import LayerKind
from tests.unit.helpers import tiny_profile

Tiny = tuple[LoadedBase, ImportanceProfile]


@pytest.fixture(scope="module")
def tiny() -> Tiny:
    return tiny_profile()


PROMPTS = [Prompt(f"Request {i}: please {verb} the {noun}. Intent:", ("play", "stop", "rate"))
           for i, (verb, noun) in enumerate((v, n) for v in ("play", "stop", "rate", "find") for n in
                                            ("song", "album", "book", "film", "show"))]


def test_compare_answers_counts_same_answers_and_kl() -> None:
    same = compare_answers([[0.0, -1.0], [-2.0, -0.5]], [[0.0, -1.0], [-2.0, -0.5]])
    assert same.agreement == 1.0 and same.mean_kl == pytest.approx(0.0, abs=1e-12) and same.n_items == 2
    flipped = compare_answers([[0.0, -5.0], [0.0, -5.0]], [[-5.0, 0.0], [0.0, -5.0]])
    assert flipped.agreement == 0.5
    p = [math.exp(0) / (1 + math.exp(-5)), math.exp(-5) / (1 + math.exp(-5))]
    expected = (p[0] * math.log(p[0] / p[1]) + p[1] * math.log(p[1] / p[0])) / 2
    assert flipped.mean_kl == pytest.approx(expected)
    with pytest.raises(ValueError, match="same non-zero number"):
        compare_answers([[0.0, 1.0]], [])
    with pytest.raises(ValueError, match=">= 2 choices"):
        compare_answers([[0.0]], [[0.0]])


def test_calibration_lowers_held_out_kl_and_changes_only_harmonizers(tiny: Tiny) -> None:
    base, profile = tiny
    spec = EmulatorSpec(base_model="tiny-llama", alpha=0.5, adapter_bottom=1, adapter_top=1)
    emulator, manifest = generate_emulator(base, spec, profile)
    before_state = {k: v.clone() for k, v in emulator.state_dict().items()}
    before = measure_agreement(base.model, emulator, base.tokenizer, PROMPTS)
    messages: list[str] = []
    settings = CalibrationSettings(steps=30, batch_size=4, lr=3e-3, max_len=64)
    record = calibrate_harmonizers(base.model, emulator, manifest.layers, base.tokenizer, PROMPTS, settings,
                                   on_progress=lambda _f, m: messages.append(m))
    assert record.kept and record.check_kl_after < record.check_kl_before
    assert record.n_prompts + record.n_check == len(PROMPTS) and len(record.curve) == 30 and messages
    assert record.prompts_sha256 == prompt_set_sha256(PROMPTS)
    after = measure_agreement(base.model, emulator, base.tokenizer, PROMPTS)
    assert after.mean_kl < before.mean_kl, (before, after)
    stack = find_block_stack(emulator).path
    harmonizers = {e.emulator_index for e in manifest.layers if e.kind == LayerKind.harmonizer}
    changed = {key for key, value in emulator.state_dict().items() if not torch.equal(value, before_state[key])}
    assert changed and all(any(key.startswith(f"{stack}.{i}.") for i in harmonizers) for key in changed), changed
    assert all(not p.requires_grad or p.grad is None for p in emulator.parameters())


def test_calibration_is_deterministic_and_cancellable(tiny: Tiny) -> None:
    base, profile = tiny
    spec = EmulatorSpec(base_model="tiny-llama", alpha=0.5, adapter_bottom=1, adapter_top=1)
    settings = CalibrationSettings(steps=5, batch_size=4, max_len=64)
    states = []
    for _ in range(2):
        emulator, manifest = generate_emulator(base, spec, profile)
        calibrate_harmonizers(base.model, emulator, manifest.layers, base.tokenizer, PROMPTS, settings)
        states.append(emulator.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    emulator, manifest = generate_emulator(base, spec, profile)
    untouched = {k: v.clone() for k, v in emulator.state_dict().items()}
    calls = iter(range(100))
    with pytest.raises(CalibrationCancelled):
        calibrate_harmonizers(base.model, emulator, manifest.layers, base.tokenizer, PROMPTS, settings,
                              should_stop=lambda: next(calls) >= 2)
    assert all(torch.equal(v, untouched[k]) for k, v in emulator.state_dict().items())  # left as it was


def test_calibration_refuses_what_it_cannot_do(tiny: Tiny) -> None:
    base, profile = tiny
    uniform = EmulatorSpec(base_model="tiny-llama", method="uniform", alpha=0.5, adapter_bottom=1, adapter_top=1)
    emulator, manifest = generate_emulator(base, uniform, None)
    with pytest.raises(ValueError, match="no harmonizers"):
        calibrate_harmonizers(base.model, emulator, manifest.layers, base.tokenizer, PROMPTS)
    spec = EmulatorSpec(base_model="tiny-llama", alpha=0.5, adapter_bottom=1, adapter_top=1)
    emulator, manifest = generate_emulator(base, spec, profile)
    with pytest.raises(ValueError, match="at least 2 prompts"):
        calibrate_harmonizers(base.model, emulator, manifest.layers, base.tokenizer, PROMPTS[:1])
    with pytest.raises(ValueError, match="at least two choices"):
        measure_agreement(base.model, emulator, base.tokenizer, [Prompt("no choices")])


def test_calibrated_ids_depend_on_the_prompt_set() -> None:
    a, b = prompt_set_sha256(PROMPTS), prompt_set_sha256(PROMPTS[::-1])
    assert a != b and a == prompt_set_sha256(list(PROMPTS))
    assert calibrated_emulator_id("emu-x", a) != calibrated_emulator_id("emu-x", b) != "emu-x"
    assert calibrated_emulator_id("emu-x", a).startswith("emu-") and len(calibrated_emulator_id("emu-x", a)) == 24
