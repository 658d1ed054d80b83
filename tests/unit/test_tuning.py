from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors import safe_open

from data_owner_client.tuning.config import TuningConfig
from data_owner_client.tuning.local import train_adapter
from data_owner_client.tuning.trainer import mean_target_loss, tune
from model_owner_server.base_models import load_base_model
from model_owner_server.emulators.build import build_emulator
from model_owner_server.emulators.spec import EmulatorSpec
from model_owner_server.tiny_models import byte_tokenizer
from shared.adapter_format import ADAPTER_FILE, PEFT_CONFIG
from shared.artifacts import load_emulator
from shared.blocks import find_block_stack
from shared.data_formats import TrainExample
from shared.training_batches import IGNORE, encode

TRAIN = [TrainExample(context=f"Q{i}: colour of the sky?", target=" blue") for i in range(24)]
VALID = [TrainExample(context="Q99: colour of the sky?", target=" blue")]
CONFIG = TuningConfig(epochs=2, lr=3e-3, batch_size=8, max_len=64, warmup_ratio=0.0)


def test_encode_masks_context_and_cuts_from_the_left() -> None:
    tok = byte_tokenizer()
    enc = encode(tok, TrainExample(context="abcdef", target="xy"), max_len=5)
    assert enc.input_ids == [*tok("def", add_special_tokens=False)["input_ids"], *tok("xy")["input_ids"],
                             tok.eos_token_id][-5:]
    assert enc.labels[:2] == [IGNORE, IGNORE] and enc.labels[2:] == enc.input_ids[2:]


@pytest.fixture
def uniform_emulator(tmp_path: Path) -> Path:
    base = load_base_model("tiny-llama")
    spec = EmulatorSpec(base_model="tiny-llama", method="uniform", alpha=0.5, adapter_bottom=1, adapter_top=2)
    build_emulator(base, spec, None, tmp_path / "emu")
    return tmp_path / "emu"


def test_full_tuning_changes_only_adapter_blocks_and_learns(uniform_emulator: Path) -> None:
    model, tok, manifest = load_emulator(uniform_emulator)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adapter = [e.emulator_index for e in manifest.layers if e.kind.value == "adapter"]
    initial = mean_target_loss(model, [encode(tok, e, 64) for e in VALID], 8, tok.pad_token_id)
    result = tune(model, tok, adapter, TRAIN, VALID, CONFIG.model_copy(update={"epochs": 4, "lr": 1e-2}))
    stack = find_block_stack(model).path
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(any(k.startswith(f"{stack}.{i}.") for i in adapter) for k in changed)
    assert set(result.state) == {k for k in before if any(k.startswith(f"{stack}.{i}.") for i in adapter)}
    losses = [e.valid_loss for e in result.epochs]
    assert all(v is not None for v in losses)
    # it learned (a tiny random model's small tied embeddings bound how low the loss can go)
    assert min(v for v in losses if v is not None) < initial - 0.5
    assert result.tokens_per_second > 0 and losses[result.best_epoch - 1] == min(losses)  # type: ignore[type-var]


def test_tuning_is_deterministic_given_the_seed(uniform_emulator: Path) -> None:
    states = []
    for _ in range(2):
        model, tok, _ = load_emulator(uniform_emulator)
        states.append(tune(model, tok, [0, 3, 4], TRAIN, None, CONFIG).state)
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_adapter_is_saved_with_full_model_block_indices(uniform_emulator: Path, tmp_path: Path) -> None:
    manifest = load_emulator(uniform_emulator)[2]
    # tiny-llama: 8 blocks, adapter 1 + 2, middle 1..5 (5 blocks), 3 dropped -> emulator has 5 blocks
    assert [e.full_index for e in manifest.layers] == [0, 1, 5, 6, 7]
    train_adapter(uniform_emulator, TRAIN, VALID, CONFIG, tmp_path / "adapter")
    with safe_open(tmp_path / "adapter" / ADAPTER_FILE, "pt") as f:
        keys, meta = set(f.keys()), f.metadata()
    blocks = {int(k.split(".")[2]) for k in keys}
    assert blocks == {0, 6, 7}
    assert meta["emulator_id"] == manifest.emulator_id and meta["blocks"] == "0,6,7"
    log = json.loads((tmp_path / "adapter" / "training_log.json").read_text())
    assert log["emulator_id"] == manifest.emulator_id and len(log["epochs"]) == 2


def test_lora_adapter_is_a_standard_peft_directory_in_full_indices(uniform_emulator: Path, tmp_path: Path) -> None:
    config = CONFIG.model_copy(update={"mode": "lora", "lr": 1e-2})
    train_adapter(uniform_emulator, TRAIN, None, config, tmp_path / "lora")
    peft_config = json.loads((tmp_path / "lora" / PEFT_CONFIG).read_text())
    assert peft_config["layers_to_transform"] == [0, 6, 7]
    full = load_base_model("tiny-llama").model
    plain_logits = full(torch.tensor([[5, 6, 7]])).logits
    peft = PeftModel.from_pretrained(full, str(tmp_path / "lora"))
    wrapped = {n.split(".lora_A")[0] for n, _ in peft.named_parameters() if ".lora_A" in n}
    assert {int(n.split(".layers.")[1].split(".")[0]) for n in wrapped} == {0, 6, 7}
    assert not torch.allclose(peft(torch.tensor([[5, 6, 7]])).logits, plain_logits)
