"""Generation with an adapter whose stored file is missing or damaged: a 410 that says to upload it
again, never a 500, and no server path in the answer (issue 27, item 5)."""

from __future__ import annotations

import shutil
from typing import Any

import pytest
from fastapi.testclient import TestClient

from model_owner_server.storage.keys import adapter_prefix
from shared.adapter_format import ADAPTER_FILE
from tests.service.conftest import Headers
from tests.service.test_protocol import declared


@pytest.mark.parametrize("damage", ["deleted", "truncated", "garbage"])
def test_generate_on_damaged_adapter_is_410(client: TestClient, alice: Headers, uploaded: dict[str, Any],
                                             damage: str) -> None:
    adapter_id = uploaded["adapter"]["id"]
    state = client.app.state.scaleot
    stored = state.store.local_dir(adapter_prefix(adapter_id))
    if damage == "deleted":
        shutil.rmtree(stored)
    elif damage == "truncated":
        data = (stored / ADAPTER_FILE).read_bytes()
        (stored / ADAPTER_FILE).write_bytes(data[: len(data) // 2])
    else:
        (stored / ADAPTER_FILE).write_bytes(b"\x80\x04 not safetensors, maybe a pickle" * 10)
    state.plugged.discard(adapter_id)  # as after a restart: the adapter is read from the store again
    response = client.post(f"/v1/adapters/{adapter_id}/generate", json={"prompt": "hello", "max_new_tokens": 3},
                           headers=alice)
    assert response.status_code == 410, response.text
    assert 410 in declared(client.get("/openapi.json").json(), "post", f"/v1/adapters/{adapter_id}/generate")
    detail = response.json()["detail"]
    assert adapter_id in detail and "upload" in detail
    assert str(state.settings.data_dir) not in detail and "/adapters/" not in detail  # no server path
