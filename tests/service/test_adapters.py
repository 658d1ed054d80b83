"""Adapter upload: a good full adapter and a LoRA PEFT directory are accepted; every bad one is
rejected with the right status, listing every problem at once."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch
from fastapi.testclient import TestClient
from safetensors.torch import load_file, save

from model_owner_server.app.main import create_app
from model_owner_server.jobs.worker import Worker
from model_owner_server.settings import Settings
from tests.service.adapters import make_lora
from tests.service.conftest import ADMIN, Headers, build, download, make_settings, new_owner, upload


def good_bytes(built: dict[str, Any]) -> bytes:
    return (built["adapter_dir"] / "adapter.safetensors").read_bytes()


def problems_of(response: Any) -> list[str]:
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail["message"].startswith("adapter rejected")
    return list(detail["problems"])


def test_good_adapter_is_stored(client: TestClient, alice: Headers, built: dict[str, Any]) -> None:
    emulator_id = built["emulator"]["id"]
    response = upload(client, alice, emulator_id, [("my-tuned.safetensors", good_bytes(built)),
                                                   ("training_log.json", b"{}")])
    assert response.status_code == 201, response.text
    adapter = response.json()
    assert adapter["kind"] == "full" and set(adapter["files"]) == {"adapter.safetensors"}
    assert adapter["size"] == len(good_bytes(built))
    assert client.get(f"/v1/adapters/{adapter['id']}", headers=alice).json() == adapter
    assert [a["id"] for a in client.get("/v1/adapters", headers=alice).json()["items"]] == [adapter["id"]]
    assert client.get(f"/v1/adapters/{adapter['id']}", headers=ADMIN).status_code == 200


def test_lora_directory_as_repeated_file_fields(client: TestClient, worker: Worker, alice: Headers,
                                                tmp_path: Path) -> None:
    emulator = build(client, worker, alice, {"base_model": "tiny-llama", "method": "uniform", "alpha": 0.5,
                                             "adapter_bottom": 1, "adapter_top": 1})
    lora = make_lora(download(client, alice, emulator, tmp_path / "emu"), tmp_path / "lora")
    files = [(p.name, p.read_bytes()) for p in sorted(lora.iterdir())]
    response = upload(client, alice, emulator["id"], files)
    assert response.status_code == 201, response.text
    assert response.json()["kind"] == "lora"
    config = json.loads((lora / "adapter_config.json").read_text())
    bad = {**config, "layers_to_transform": [3], "r": 0}
    weights = [f for f in files if f[0] == "adapter_model.safetensors"]
    problems = problems_of(upload(client, alice, emulator["id"], [("adapter_config.json", json.dumps(bad).encode()),
                                                                  *weights]))
    assert any("layers_to_transform [3]" in p for p in problems) and any("field 'r'" in p for p in problems)
    assert "needs adapter_config.json" in problems_of(upload(client, alice, emulator["id"], weights))[0]


def test_wrong_keys_and_shapes_listed_together(client: TestClient, alice: Headers, built: dict[str, Any]) -> None:
    state = load_file(built["adapter_dir"] / "adapter.safetensors")
    keys = sorted(state)
    dropped, reshaped = keys[0], keys[1]
    del state[dropped]
    state[reshaped] = torch.zeros(3, 3)
    state["transformer.h.3.mlp.c_fc.weight"] = torch.zeros(64, 256)  # a middle block: never accepted
    problems = problems_of(upload(client, alice, built["emulator"]["id"], [("adapter.safetensors", save(state))]))
    assert len(problems) == 3
    assert any(f"missing tensor {dropped}" in p for p in problems)
    assert any(f"{reshaped}: shape [3, 3]" in p for p in problems)
    assert any("unexpected tensor transformer.h.3.mlp.c_fc.weight" in p for p in problems)


def test_nan_truncated_pickle_and_names(client: TestClient, alice: Headers, built: dict[str, Any]) -> None:
    emulator_id = built["emulator"]["id"]
    state = load_file(built["adapter_dir"] / "adapter.safetensors")
    key = sorted(state)[0]
    state[key] = state[key].clone()
    state[key].view(-1)[0] = float("nan")
    assert "NaN or Inf" in problems_of(upload(client, alice, emulator_id, [("adapter.safetensors", save(state))]))[0]
    good = good_bytes(built)
    assert "truncated" in " ".join(problems_of(upload(client, alice, emulator_id,
                                                      [("adapter.safetensors", good[: len(good) // 2])])))
    pickled = pickle.dumps({"weights": [1, 2, 3]})
    assert "not a safetensors file" in problems_of(upload(client, alice, emulator_id,
                                                         [("adapter.safetensors", pickled)]))[0]
    named = problems_of(upload(client, alice, emulator_id, [("adapter.safetensors", good), ("model.bin", b"x")]))
    assert any("unexpected file 'model.bin'" in p for p in named)
    assert "no adapter file" in problems_of(upload(client, alice, emulator_id, [("training_log.json", b"{}")]))[0]
    missing_id = client.post("/v1/adapters", files=[("file", ("adapter.safetensors", good))], headers=alice)
    assert "emulator_id" in problems_of(missing_id)[0]


def test_emulator_must_exist_be_yours_be_built_and_match(client: TestClient, worker: Worker, alice: Headers,
                                                         bob: Headers, built: dict[str, Any]) -> None:
    good = [("adapter.safetensors", good_bytes(built))]
    assert upload(client, alice, "emu-unknown", good).status_code == 404
    assert upload(client, bob, built["emulator"]["id"], good).status_code == 404
    sibling = client.post("/v1/emulators", json={**built["emulator"]["spec"], "beta": 0.0}, headers=alice).json()
    response = upload(client, alice, sibling["id"], good)
    assert response.status_code == 409, response.text
    worker.run_until_idle()
    # same blocks, same key set, but tuned on another emulator: the recorded emulator id says so
    problems = problems_of(upload(client, alice, sibling["id"], good))
    assert problems == [f"adapter.safetensors: tuned on emulator {built['emulator']['id']}, not {sibling['id']}; "
                        f"upload it with emulator_id={built['emulator']['id']} or tune on this emulator"]


def test_not_multipart_is_400_and_oversize_is_413(tmp_path: Path, built: dict[str, Any]) -> None:
    small: Settings = make_settings(tmp_path / "small", max_upload_bytes=1000)
    with TestClient(create_app(small)) as client:
        carol = new_owner(client, "carol")
        response = client.post("/v1/adapters", json={"emulator_id": "x"}, headers=carol)
        assert response.status_code == 400 and "multipart" in response.json()["detail"]
        big = upload(client, carol, "emu-any", [("adapter.safetensors", good_bytes(built))])
        assert big.status_code == 413 and "1000 bytes" in big.json()["detail"]
        # a chunked body without Content-Length is cut off while streaming, too
        def chunks() -> Any:
            for _ in range(10):
                yield b"x" * 500
        streamed = client.post("/v1/adapters", content=chunks(),
                               headers={**carol, "Content-Type": "multipart/form-data; boundary=abc"})
        assert streamed.status_code == 413
    assert not any((tmp_path / "small" / "tmp").iterdir())  # partial uploads are removed
