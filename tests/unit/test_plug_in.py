from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from data_owner_client.tuning.config import TuningConfig
from data_owner_client.tuning.local import train_adapter
from model_owner_server import adapter_checks
from model_owner_server.base_models import LoadedBase, load_base_model
from model_owner_server.emulators.build import build_emulator
from model_owner_server.emulators.spec import EmulatorSpec
from model_owner_server.plug_in import changes_outputs, emulator_with_adapter, plug_in
from shared.adapter_format import ADAPTER_FILE, AdapterError
from shared.artifacts import load_emulator
from shared.data_formats import TrainExample
from shared.manifest import EmulatorManifest

TRAIN = [TrainExample(context=f"item {i} is", target=" red") for i in range(16)]
CONFIG = TuningConfig(epochs=1, lr=3e-3, batch_size=8, max_len=32, warmup_ratio=0.0)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[LoadedBase, EmulatorManifest, Path, Path]:
    base = load_base_model("tiny-gpt2")
    spec = EmulatorSpec(base_model="tiny-gpt2", method="uniform", alpha=0.5, beta=0.5, adapter_bottom=1,
                        adapter_top=1)
    manifest = build_emulator(base, spec, None, tmp_path / "emu")
    train_adapter(tmp_path / "emu", TRAIN, None, CONFIG, tmp_path / "adapter")
    return base, manifest, tmp_path / "emu", tmp_path / "adapter"


def test_plug_in_replaces_only_adapter_blocks(setup: tuple[LoadedBase, EmulatorManifest, Path, Path]) -> None:
    base, manifest, _, adapter_dir = setup
    adapter = adapter_checks.validate(adapter_dir, base, manifest)
    plugged = plug_in(base, adapter)
    original = base.model.state_dict()
    for key, value in plugged.state_dict().items():
        block = int(key.split(".")[2]) if key.startswith("transformer.h.") else None
        if block in (0, 7):
            assert torch.equal(value, adapter.state[key])
        else:
            assert torch.equal(value, original[key]), key  # original (uncompressed) middle intact
    assert changes_outputs(base.model, plugged, base.tokenizer)


def test_emulator_with_adapter_equals_the_tuned_emulator(setup: tuple[LoadedBase, EmulatorManifest, Path, Path],
                                                          ) -> None:
    base, manifest, emu_dir, adapter_dir = setup
    emulator, tok, _ = load_emulator(emu_dir)
    tuned = emulator_with_adapter(emulator, manifest, adapter_checks.validate(adapter_dir, base, manifest))
    emulator2, _, _ = load_emulator(emu_dir)
    from data_owner_client.tuning.trainer import tune

    reference = tune(emulator2, tok, [e.emulator_index for e in manifest.layers if e.kind.value == "adapter"],
                     TRAIN, None, CONFIG).model
    ids = torch.tensor([[1, 2, 3, 4]])
    torch.testing.assert_close(tuned(ids).logits, reference(ids).logits)


def _rewrite(adapter_dir: Path, change: dict[str, torch.Tensor], drop: list[str]) -> None:
    state = load_file(adapter_dir / ADAPTER_FILE)
    for key in drop:
        del state[key]
    state.update(change)
    save_file(state, adapter_dir / ADAPTER_FILE)


def test_every_problem_is_listed_at_once(setup: tuple[LoadedBase, EmulatorManifest, Path, Path]) -> None:
    base, manifest, _, adapter_dir = setup
    state = load_file(adapter_dir / ADAPTER_FILE)
    some, other = sorted(state)[:2]
    _rewrite(adapter_dir, {"transformer.h.3.mlp.c_fc.weight": torch.zeros(64, 256),  # a middle block
                           other: torch.zeros(3, 3)}, drop=[some])
    with pytest.raises(AdapterError) as info:
        adapter_checks.validate(adapter_dir, base, manifest)
    text = str(info.value)
    assert f"missing tensor {some}" in text
    assert "unexpected tensor transformer.h.3.mlp.c_fc.weight" in text
    assert f"{other}: shape [3, 3]" in text
    assert len(info.value.problems) == 3


def test_non_finite_truncated_and_pickled_files_are_rejected(
    setup: tuple[LoadedBase, EmulatorManifest, Path, Path],
) -> None:
    base, manifest, _, adapter_dir = setup
    key = sorted(load_file(adapter_dir / ADAPTER_FILE))[0]
    good = (adapter_dir / ADAPTER_FILE).read_bytes()
    state = load_file(adapter_dir / ADAPTER_FILE)
    state[key] = state[key].clone()
    state[key].view(-1)[0] = float("nan")
    save_file(state, adapter_dir / ADAPTER_FILE)
    with pytest.raises(AdapterError, match="NaN or Inf"):
        adapter_checks.validate(adapter_dir, base, manifest)
    (adapter_dir / ADAPTER_FILE).write_bytes(good[: len(good) // 2])
    with pytest.raises(AdapterError, match="truncated"):
        adapter_checks.validate(adapter_dir, base, manifest)
    (adapter_dir / ADAPTER_FILE).write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(AdapterError, match="not a safetensors file"):
        adapter_checks.validate(adapter_dir, base, manifest)
    (adapter_dir / ADAPTER_FILE).unlink()
    with pytest.raises(AdapterError, match=r"no adapter\.safetensors"):
        adapter_checks.validate(adapter_dir, base, manifest)


def test_adapter_for_another_emulator_is_rejected(setup: tuple[LoadedBase, EmulatorManifest, Path, Path],
                                                  tmp_path: Path) -> None:
    base, _, _, adapter_dir = setup
    other = build_emulator(base, EmulatorSpec(base_model="tiny-gpt2", method="uniform", alpha=0.5, adapter_bottom=2,
                                              adapter_top=2), None, tmp_path / "other")
    with pytest.raises(AdapterError, match=r"missing tensor transformer\.h\.1\."):
        adapter_checks.validate(adapter_dir, base, other)


def test_lora_plug_in_matches_peft_loading(tmp_path: Path) -> None:
    from peft import PeftModel

    base = load_base_model("tiny-llama")
    manifest = build_emulator(base, EmulatorSpec(base_model="tiny-llama", method="uniform", alpha=0.5,
                                                 adapter_bottom=1, adapter_top=1), None, tmp_path / "emu")
    train_adapter(tmp_path / "emu", TRAIN, None, CONFIG.model_copy(update={"mode": "lora", "lr": 1e-2}),
                  tmp_path / "lora")
    adapter = adapter_checks.validate(tmp_path / "lora", base, manifest)
    assert adapter.kind == "lora"
    plugged = plug_in(base, adapter)
    reference = PeftModel.from_pretrained(load_base_model("tiny-llama").model, str(tmp_path / "lora"))
    ids = torch.tensor([[1, 2, 3, 4]])
    torch.testing.assert_close(plugged(ids).logits, reference(ids).logits, rtol=1e-4, atol=1e-5)
    assert changes_outputs(base.model, plugged, base.tokenizer)
