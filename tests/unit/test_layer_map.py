from __future__ import annotations

import itertools

import pytest
import torch

from model_owner_server.base_models import load_base_model
from model_owner_server.emulators.build import generate_emulator
from model_owner_server.emulators.selection import least_important, uniform_kept
from model_owner_server.emulators.spec import EmulatorSpec
from shared.blocks import find_block_stack
from shared.harmonizer import Harmonizer
from shared.manifest import EmulatorOptions, LayerKind
from tests.unit.helpers import tiny_profile


def test_uniform_kept_is_evenly_spaced_with_both_ends() -> None:
    middle = list(range(2, 28))  # SmolLM2: 30 blocks, adapter 2 + 2
    kept = uniform_kept(middle, 13)
    assert kept[0] == 2 and kept[-1] == 27 and len(kept) == 13
    gaps = {b - a for a, b in itertools.pairwise(kept)}
    assert gaps <= {2, 3}
    assert uniform_kept(middle, 0) == [] and uniform_kept(middle, 26) == middle


def test_least_important_breaks_ties_by_position() -> None:
    assert least_important([3, 4, 5, 6], [0.5, -1.0, 0.5, -1.0], 3) == [3, 4, 6]


@pytest.mark.parametrize(("alpha", "n_rep"), [(0.0, 0), (0.25, 2), (0.5, 3), (0.75, 5), (1.0, 6)])
def test_scaleot_layer_map_replaces_the_least_important_blocks(alpha: float, n_rep: int) -> None:
    base, profile = tiny_profile()
    spec = EmulatorSpec(base_model="tiny-llama", alpha=alpha, adapter_bottom=1, adapter_top=1)
    emulator, manifest = generate_emulator(base, spec, profile)
    middle = profile.meta.middle
    assert middle == list(range(1, 7))
    ranked = sorted(middle, key=lambda i: (profile.importance_of()[i], i))
    replaced = [e.full_index for e in manifest.layers if e.kind == LayerKind.harmonizer]
    assert sorted(replaced) == sorted(ranked[:n_rep])
    assert [e.full_index for e in manifest.layers] == list(range(8))  # harmonizers keep every position
    assert [e.emulator_index for e in manifest.layers] == list(range(8))
    assert manifest.adapter_indices() == [0, 7]
    blocks = find_block_stack(emulator).blocks
    for entry in manifest.layers:
        assert isinstance(blocks[entry.emulator_index], Harmonizer) == (entry.kind == LayerKind.harmonizer)


def test_uniform_layer_map_drops_and_renumbers_blocks_for_the_kv_cache() -> None:
    base = load_base_model("tiny-qwen2")
    spec = EmulatorSpec(base_model="tiny-qwen2", method="uniform", alpha=0.5, adapter_bottom=2, adapter_top=1)
    emulator, manifest = generate_emulator(base, spec, profile=None)
    full = [e.full_index for e in manifest.layers]
    assert full == [0, 1, 2, 6, 7]  # M = 5, round_half_up(2.5) = 3 dropped
    assert [e.kind for e in manifest.layers] == [LayerKind.adapter] * 2 + [LayerKind.kept] * 2 + [LayerKind.adapter]
    assert emulator.config.num_hidden_layers == 5 and len(emulator.config.layer_types) == 5
    for i, block in enumerate(find_block_stack(emulator).blocks):
        assert block.self_attn.layer_idx == i
    ids = torch.randint(0, 250, (1, 7))
    out = emulator.generate(ids, max_new_tokens=6, do_sample=False, min_new_tokens=6)
    assert out.shape == (1, 13)
    # greedy generation with the KV cache equals recomputing the whole sequence each time
    logits = emulator(out[:, :-1], use_cache=False).logits
    assert torch.equal(logits[0, 6:].argmax(-1), out[0, 7:])


@pytest.mark.parametrize(
    ("options", "positions"),
    [
        (EmulatorOptions(harmonizers=False), "importance"),
        (EmulatorOptions(importance=False), "uniform"),
    ],
)
def test_ablation_switches(options: EmulatorOptions, positions: str) -> None:
    base, profile = tiny_profile()
    spec = EmulatorSpec(base_model="tiny-llama", alpha=0.5, adapter_bottom=1, adapter_top=1, options=options)
    _, manifest = generate_emulator(base, spec, profile)
    uniform = EmulatorSpec(base_model="tiny-llama", method="uniform", alpha=0.5, adapter_bottom=1, adapter_top=1)
    _, uniform_manifest = generate_emulator(base, uniform, None)
    uniform_gone = set(range(1, 7)) - {e.full_index for e in uniform_manifest.layers}
    if positions == "importance":  # importance-based LayerDrop
        gone = set(range(8)) - {e.full_index for e in manifest.layers}
        ranked = sorted(profile.meta.middle, key=lambda i: (profile.importance_of()[i], i))
        assert gone == set(ranked[:3])  # round_half_up(0.5 * 6)
        assert manifest.harmonizer is None
    else:  # uniform positions, trained harmonizers
        assert {e.full_index for e in manifest.layers if e.kind == LayerKind.harmonizer} == uniform_gone
        assert manifest.profile_id == profile.meta.profile_id


def test_spec_validation_messages() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        EmulatorSpec(base_model="x", adapter_bottom=0, adapter_top=0)
    with pytest.raises(ValueError, match="leaves no middle"):
        EmulatorSpec(base_model="x", adapter_bottom=4, adapter_top=4).check_against(8)
    with pytest.raises(ValueError):
        EmulatorSpec(base_model="x", alpha=1.5)
    a = EmulatorSpec(base_model="x", alpha=0.5).emulator_id("sha", "p")
    assert a == EmulatorSpec(base_model="x", alpha=0.5).emulator_id("sha", "p")
    assert a != EmulatorSpec(base_model="x", alpha=0.5, beta=0.1).emulator_id("sha", "p")
