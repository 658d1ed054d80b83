"""Issue 26 item 2: evaluation jobs and generation check a stored adapter with the upload's own
`adapter_checks.validate`, emulator-id metadata included (they used to check tensors only). A stored
adapter whose metadata no longer names its emulator is refused there with the upload's reason."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from safetensors.torch import load_file, save_file

from model_owner_server.jobs.worker import Worker
from model_owner_server.storage.keys import adapter_prefix
from shared.adapter_format import ADAPTER_FILE
from tests.service.conftest import Headers
from tests.service.test_evaluations import jsonl

ROWS = [{"context": "The sky is", "choices": [" blue", " green"], "label": 0}] * 3


def _retag(client: TestClient, adapter_id: str, emulator_id: str) -> None:
    """The stored file with the same tensors, its metadata naming another emulator."""
    state = client.app.state.scaleot
    path = state.store.local_dir(adapter_prefix(adapter_id)) / ADAPTER_FILE
    save_file(load_file(path), path, metadata={"emulator_id": emulator_id})
    state.plugged.discard(adapter_id)  # as after a restart: read from the store again


def test_evaluation_refuses_a_stored_adapter_tagged_for_another_emulator(
        client: TestClient, worker: Worker, alice: Headers, uploaded: dict[str, Any]) -> None:
    adapter_id = uploaded["adapter"]["id"]
    _retag(client, adapter_id, "emu-someone-else")
    response = client.post("/v1/evaluations", data={"adapter_id": adapter_id, "task": "sky"},
                           files=[("file", ("rows.jsonl", jsonl(ROWS)))], headers=alice)
    assert response.status_code == 202, response.text
    worker.run_until_idle()
    done = client.get(f"/v1/evaluations/{response.json()['id']}", headers=alice).json()
    assert done["status"]["state"] == "failed", done["status"]
    assert "tuned on emulator emu-someone-else" in done["status"]["error"], done["status"]


def test_generation_refuses_it_too(client: TestClient, alice: Headers, uploaded: dict[str, Any]) -> None:
    adapter_id = uploaded["adapter"]["id"]
    url = f"/v1/adapters/{adapter_id}/generate"
    assert client.post(url, json={"prompt": "hi", "max_new_tokens": 2}, headers=alice).status_code == 200
    _retag(client, adapter_id, "emu-someone-else")
    response = client.post(url, json={"prompt": "hi", "max_new_tokens": 2}, headers=alice)
    assert response.status_code == 410, response.text  # as for any stored file that no longer passes
    _retag(client, adapter_id, uploaded["emulator"]["id"])  # its own emulator again: accepted again
    assert client.post(url, json={"prompt": "hi", "max_new_tokens": 2}, headers=alice).status_code == 200
