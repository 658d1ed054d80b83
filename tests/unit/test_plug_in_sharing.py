"""Issue 27 item 3: a plugged model is no copy of the full model. Only the adapter's blocks are its own;
every other tensor shares its storage with the loaded base, which plugging never changes (values or
flags), and the result equals plugging into a full copy."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from model_owner_server import adapter_checks
from model_owner_server.adapter_checks import CheckedAdapter
from model_owner_server.base_models import LoadedBase, load_base_model
from model_owner_server.emulators.build import build_emulator
from model_owner_server.emulators.spec import EmulatorSpec
from model_owner_server.plug_in import plug_in
from shared.adapter_format import PEFT_CONFIG
from shared.manifest import EmulatorManifest
from tests.service.adapters import make_lora

IDS = torch.tensor([[1, 2, 3, 4, 5]])


@pytest.fixture
def llama(tmp_path: Path) -> tuple[LoadedBase, EmulatorManifest, Path]:
    base = load_base_model("tiny-llama")
    spec = EmulatorSpec(base_model="tiny-llama", method="uniform", alpha=0.5, adapter_bottom=1, adapter_top=1)
    return base, build_emulator(base, spec, None, tmp_path / "emu"), tmp_path / "emu"


def _snapshot(model: torch.nn.Module) -> dict[str, tuple[torch.Tensor, bool]]:
    return {k: (v.detach().clone(), v.requires_grad) for k, v in model.named_parameters()}


def _assert_unchanged(model: torch.nn.Module, snapshot: dict[str, tuple[torch.Tensor, bool]]) -> None:
    for name, param in model.named_parameters():
        value, requires_grad = snapshot[name]
        assert torch.equal(param, value), name
        assert param.requires_grad == requires_grad, name


def _own_bytes(plugged: torch.nn.Module, base: torch.nn.Module) -> tuple[int, set[str]]:
    """Bytes of the plugged model's tensors that the base does not hold, and their names."""
    shared = {p.data_ptr() for p in base.parameters()} | {b.data_ptr() for b in base.buffers()}
    own = {n: p for n, p in plugged.named_parameters() if p.data_ptr() not in shared}
    return sum(p.numel() * p.element_size() for p in own.values()), set(own)


def test_full_adapter_shares_everything_but_its_blocks(llama: tuple[LoadedBase, EmulatorManifest, Path]) -> None:
    base, manifest, _ = llama
    generator = torch.Generator().manual_seed(0)
    state = {k: base.model.state_dict()[k] + 0.1 * torch.randn(info.shape, generator=generator)
             for k, info in adapter_checks.expected_full_tensors(base, manifest).items()}
    before = _snapshot(base.model)
    plugged = plug_in(base, CheckedAdapter("full", Path("unused"), state))
    _assert_unchanged(base.model, before)
    own_bytes, own = _own_bytes(plugged, base.model)
    assert own == set(state)  # exactly the adapter's tensors are new
    assert own_bytes == sum(v.numel() * v.element_size() for v in state.values())
    model_bytes = sum(p.numel() * p.element_size() for p in base.model.parameters())
    assert own_bytes < model_bytes / 3  # 2 of 8 blocks, no embeddings
    reference = copy.deepcopy(base.model)  # what plug_in used to build
    reference.load_state_dict(state, strict=False)
    with torch.no_grad():
        torch.testing.assert_close(plugged(IDS).logits, reference(IDS).logits, rtol=0, atol=0)


def test_lora_merge_changes_only_the_copy(llama: tuple[LoadedBase, EmulatorManifest, Path], tmp_path: Path) -> None:
    base, manifest, emu = llama
    adapter = adapter_checks.validate(make_lora(emu, tmp_path / "lora"), base, manifest)
    before = _snapshot(base.model)
    with torch.no_grad():
        logits_before = base.model(IDS).logits
    plugged = plug_in(base, adapter)
    _assert_unchanged(base.model, before)  # PEFT's requires_grad flags and the merge stayed in the copy
    _, own = _own_bytes(plugged, base.model)
    blocks = {int(name.split(".")[2]) for name in own}
    assert own and blocks <= set(manifest.adapter_indices())
    with torch.no_grad():
        assert not torch.allclose(plugged(IDS).logits, logits_before)
        torch.testing.assert_close(base.model(IDS).logits, logits_before, rtol=0, atol=0)


def test_writes_outside_the_adapter_blocks_are_refused(llama: tuple[LoadedBase, EmulatorManifest, Path],
                                                      tmp_path: Path) -> None:
    """A full adapter key outside every block, or a LoRA config on disk wrapping more blocks than were
    checked, would write a tensor shared with the base: refused before anything is written."""
    base, manifest, emu = llama
    before = _snapshot(base.model)
    with pytest.raises(ValueError, match="lies in no block"):
        plug_in(base, CheckedAdapter("full", Path("unused"), {"lm_head.weight": torch.zeros(260, 64)}))
    directory = make_lora(emu, tmp_path / "lora")
    checked = adapter_checks.validate(directory, base, manifest)
    assert checked.lora_config is not None
    config = json.loads((directory / PEFT_CONFIG).read_text())
    (directory / PEFT_CONFIG).write_text(json.dumps({**config, "layers_to_transform": [0, 3, 7]}))
    with pytest.raises(ValueError, match=r"wraps blocks \[3\]"):
        plug_in(base, checked)
    _assert_unchanged(base.model, before)
