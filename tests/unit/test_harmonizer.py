from __future__ import annotations

import pytest
import torch

from model_owner_server.base_models import load_base_model
from model_owner_server.emulators.build import generate_emulator
from model_owner_server.emulators.spec import EmulatorSpec
from model_owner_server.tiny_models import TINY_MODELS
from shared.blocks import find_block_stack
from shared.harmonizer import Harmonizer, HarmonizerConfig
from shared.manifest import EmulatorOptions, LayerKind


@pytest.mark.parametrize("name", TINY_MODELS)
def test_untrained_harmonizer_is_identity_and_accepts_block_kwargs(name: str) -> None:
    base = load_base_model(name)
    block = find_block_stack(base.model).blocks[3]
    harmonizer = Harmonizer.for_block(block, 64, HarmonizerConfig(rank=8, activation="gelu"))
    h = torch.randn(2, 5, 64)
    out = harmonizer(h, attention_mask=None, position_ids=torch.arange(5)[None], cache=None, use_cache=False)
    assert torch.equal(out, h)
    harmonizer.up.weight.data.normal_()
    assert not torch.allclose(harmonizer(h), h)


@pytest.mark.parametrize("name", TINY_MODELS)
@pytest.mark.parametrize("alpha", [0.25, 0.5, 1.0])
def test_untrained_harmonizer_emulator_equals_layerdrop(name: str, alpha: float) -> None:
    base = load_base_model(name)
    untrained = EmulatorSpec(
        base_model=name,
        method="scaleot",
        alpha=alpha,
        adapter_bottom=1,
        adapter_top=1,
        options=EmulatorOptions(importance=False),
    )
    layerdrop = EmulatorSpec(base_model=name, method="uniform", alpha=alpha, adapter_bottom=1, adapter_top=1)
    with_harmonizers, m1 = generate_emulator(base, untrained, profile=None)
    dropped, m2 = generate_emulator(base, layerdrop, profile=None)
    replaced = {e.full_index for e in m1.layers if e.kind == LayerKind.harmonizer}
    assert replaced and replaced.isdisjoint({e.full_index for e in m2.layers})
    ids = torch.randint(0, 250, (2, 12))
    a, b = with_harmonizers(ids).logits, dropped(ids).logits
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
