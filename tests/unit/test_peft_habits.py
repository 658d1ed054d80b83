"""A LoRA adapter directory behaves as PEFT users expect, offline: `AutoPeftModelForCausalLM` resolves
the full model from `base_model_name_or_path` as a local path (never the hub), and
`PeftModel.from_pretrained(full_model, dir)` keeps working."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
import torch
from peft import AutoPeftModelForCausalLM, PeftModel
from safetensors import safe_open

from data_owner_client.tuning.config import TuningConfig
from data_owner_client.tuning.local import peft_base_path, train_adapter
from model_owner_server.base_models import load_base_model
from model_owner_server.emulators.build import build_emulator
from model_owner_server.emulators.spec import EmulatorSpec
from shared.adapter_format import PEFT_CONFIG, PEFT_WEIGHTS
from shared.data_formats import TrainExample

TRAIN = [TrainExample(context=f"item {i} is", target=" red") for i in range(8)]
LORA = TuningConfig(mode="lora", epochs=1, lr=1e-2, batch_size=4, max_len=32, warmup_ratio=0.0)
IDS = torch.tensor([[5, 6, 7, 8]])


@pytest.fixture
def owner_models(tmp_path: Path) -> Path:
    """The model owner's prepared-models folder ($SCALEOT_CACHE_DIR/models) holding tiny-llama."""
    base = load_base_model("tiny-llama")
    base.model.save_pretrained(tmp_path / "models" / "tiny-llama")
    base.tokenizer.save_pretrained(tmp_path / "models" / "tiny-llama")
    return tmp_path / "models"


@pytest.fixture
def emulator(tmp_path: Path) -> Path:
    base = load_base_model("tiny-llama")
    build_emulator(base, EmulatorSpec(base_model="tiny-llama", method="uniform", alpha=0.5, adapter_bottom=1,
                                      adapter_top=1), None, tmp_path / "emu")
    return tmp_path / "emu"


@pytest.fixture
def looked_up(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every host name looked up (a hub request needs one), recorded and refused."""
    hosts: list[object] = []

    def refuse(host: object, *args: object, **kwargs: object) -> list[object]:
        hosts.append(host)
        raise OSError(f"no network in this test (asked for {host})")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return hosts


def test_base_path_is_local_never_a_hub_id() -> None:
    assert peft_base_path("smollm2-135m") == "./smollm2-135m"
    assert peft_base_path("/srv/models/qwen3") == "/srv/models/qwen3"


def test_auto_peft_loads_the_full_model_from_the_owner_models_folder(
        emulator: Path, owner_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        looked_up: list[object]) -> None:
    train_adapter(emulator, TRAIN, None, LORA, tmp_path / "lora")
    config = json.loads((tmp_path / "lora" / PEFT_CONFIG).read_text())
    assert config["base_model_name_or_path"] == "./tiny-llama"
    with safe_open(str(tmp_path / "lora" / PEFT_WEIGHTS), "pt") as f:
        assert f.metadata()["base_model"] == "tiny-llama"

    reference = PeftModel.from_pretrained(load_base_model("tiny-llama").model, str(tmp_path / "lora"))
    monkeypatch.chdir(owner_models)
    auto = AutoPeftModelForCausalLM.from_pretrained(str(tmp_path / "lora"))
    torch.testing.assert_close(auto(IDS).logits, reference(IDS).logits)
    assert not torch.allclose(auto(IDS).logits, load_base_model("tiny-llama").model(IDS).logits)

    monkeypatch.chdir(tmp_path)  # elsewhere: an invalid hub id, refused before any request
    with pytest.raises(OSError, match="tiny-llama"):
        AutoPeftModelForCausalLM.from_pretrained(str(tmp_path / "lora"))
    assert looked_up == []


def test_a_bare_registry_name_would_ask_the_hub(emulator: Path, tmp_path: Path, looked_up: list[object],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """What the adapter named before: the guard above does see a hub request."""
    monkeypatch.setattr(time, "sleep", lambda seconds: None)  # the hub client's retry back-off
    train_adapter(emulator, TRAIN, None, LORA.model_copy(update={"lora_base_path": "tiny-llama"}), tmp_path / "lora")
    with pytest.raises(OSError):
        AutoPeftModelForCausalLM.from_pretrained(str(tmp_path / "lora"))
    assert looked_up


def test_explicit_base_path_loads_from_anywhere(emulator: Path, owner_models: Path, tmp_path: Path,
                                                looked_up: list[object]) -> None:
    where = str(owner_models / "tiny-llama")
    train_adapter(emulator, TRAIN, None, LORA.model_copy(update={"lora_base_path": where}), tmp_path / "lora")
    assert json.loads((tmp_path / "lora" / PEFT_CONFIG).read_text())["base_model_name_or_path"] == where
    auto = AutoPeftModelForCausalLM.from_pretrained(str(tmp_path / "lora"))
    reference = PeftModel.from_pretrained(load_base_model("tiny-llama").model, str(tmp_path / "lora"))
    torch.testing.assert_close(auto(IDS).logits, reference(IDS).logits)
    assert looked_up == []
