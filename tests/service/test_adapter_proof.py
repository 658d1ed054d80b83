"""Issue 11, class 2: adapters that used to be accepted and break later are refused at upload (422
naming the field or the probe), and an accepted one generates; a full adapter with stray LoRA files
is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load_file, save

from data_owner_client.tuning.config import TuningConfig
from data_owner_client.tuning.local import train_adapter
from model_owner_server.jobs.worker import Worker
from shared.data_formats import TrainExample
from tests.service.adapters import make_lora
from tests.service.conftest import Headers, build, download, upload

TINY_LLAMA = {"base_model": "tiny-llama", "method": "uniform", "alpha": 0.5, "adapter_bottom": 1, "adapter_top": 1}


def problems_of(response: Any) -> list[str]:
    assert response.status_code == 422, response.text
    return list(response.json()["detail"]["problems"])


@pytest.fixture
def lora(client: TestClient, worker: Worker, alice: Headers, tmp_path: Path) -> dict[str, Any]:
    emulator = build(client, worker, alice, TINY_LLAMA)
    directory = make_lora(download(client, alice, emulator, tmp_path / "emu"), tmp_path / "lora")
    return {"id": emulator["id"], "config": json.loads((directory / "adapter_config.json").read_text()),
            "weights": (directory / "adapter_model.safetensors").read_bytes()}


def send_lora(client: TestClient, alice: Headers, lora: dict[str, Any], config: dict[str, Any]) -> Any:
    return upload(client, alice, lora["id"], [("adapter_config.json", json.dumps(config).encode()),
                                              ("adapter_model.safetensors", lora["weights"])])


@pytest.mark.parametrize("change, field", [
    ({"lora_alpha": "abc"}, "lora_alpha"),
    ({"lora_alpha": "8"}, "lora_alpha"),
    ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
    ({"target_modules": [["q_proj"]]}, "target_modules"),
    ({"target_modules": "q_proj|v_proj"}, "target_modules"),
    ({"use_dora": True}, "use_dora"),
    ({"rank_pattern": {"q_proj": 64}}, "rank_pattern"),
    ({"bias": "all"}, "bias"),
    ({"brand_new_feature": {"on": 1}}, "brand_new_feature"),
    ({"r": 10**30}, "'r'"),
])
def test_lora_config_outside_the_schema_is_422_naming_the_field(client: TestClient, alice: Headers,
                                                                lora: dict[str, Any], change: dict[str, Any],
                                                                field: str) -> None:
    problems = problems_of(send_lora(client, alice, lora, {**lora["config"], **change}))
    assert any(field in p for p in problems), problems


def test_accepted_lora_is_canonical_and_generates(client: TestClient, alice: Headers, lora: dict[str, Any]) -> None:
    response = send_lora(client, alice, {**lora}, {**lora["config"], "future_switch": None})
    assert response.status_code == 201, response.text
    adapter = response.json()
    generated = client.post(f"/v1/adapters/{adapter['id']}/generate", json={"prompt": "hi", "max_new_tokens": 3,
                                                                            "temperature": 0.7, "seed": 3},
                            headers=alice)
    assert generated.status_code == 200, generated.text


def test_overflowing_full_adapter_is_refused_by_the_probe(client: TestClient, alice: Headers,
                                                          built: dict[str, Any]) -> None:
    state = load_file(built["adapter_dir"] / "adapter.safetensors")
    huge = {k: torch.full_like(v, 3e38) for k, v in state.items()}  # finite values: the header checks pass
    metadata = {"emulator_id": built["emulator"]["id"]}
    problems = problems_of(upload(client, alice, built["emulator"]["id"],
                                  [("adapter.safetensors", save(huge, metadata=metadata))]))
    assert any(p.startswith("probe forward") for p in problems), problems
    assert client.get("/v1/adapters", headers=alice).json()["items"] == []  # nothing stored


def test_full_adapter_with_stray_lora_files_is_refused(client: TestClient, alice: Headers,
                                                       built: dict[str, Any]) -> None:
    good = (built["adapter_dir"] / "adapter.safetensors").read_bytes()
    config = json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["c_attn"],
                         "layers_to_transform": [0]}).encode()
    for stray in ([("adapter_config.json", config)], [("adapter_config.json", config),
                                                     ("adapter_model.safetensors", b"\x00" * 16)]):
        problems = problems_of(upload(client, alice, built["emulator"]["id"], [("adapter.safetensors", good), *stray]))
        assert any("upload one kind" in p for p in problems), problems


def test_lora_trained_by_the_data_owner_client_is_accepted(client: TestClient, worker: Worker, alice: Headers,
                                                           tmp_path: Path) -> None:
    """`scaleot train --mode lora` writes PEFT's full config (layers_pattern, task_type, dropout...)."""
    emulator = build(client, worker, alice, TINY_LLAMA)
    emulator_dir = download(client, alice, emulator, tmp_path / "emu")
    rows = [TrainExample(context="The sky is", target=" blue.")] * 8
    config = TuningConfig(mode="lora", epochs=1, lr=1e-3, batch_size=4, max_len=16, warmup_ratio=0.0)
    train_adapter(emulator_dir, rows, None, config, tmp_path / "lora")
    files = [(p.name, p.read_bytes()) for p in sorted((tmp_path / "lora").iterdir()) if p.is_file()]
    response = upload(client, alice, emulator["id"], files)
    assert response.status_code == 201, response.text
    wrong = {**json.loads(dict(files)["adapter_config.json"]), "layers_pattern": "blocks"}
    problems = problems_of(upload(client, alice, emulator["id"], [*[f for f in files if f[0] != "adapter_config.json"],
                                                                  ("adapter_config.json", json.dumps(wrong).encode())]))
    assert any("layers_pattern" in p for p in problems), problems
