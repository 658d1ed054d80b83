"""POST /v1/adapters/{id}/generate on the shared-base serving: a full queue is a 503 with Retry-After,
never a wait without bound; a served adapter is forgotten with the plugged one."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.service.conftest import Headers


def test_generate_answers_503_when_the_queue_is_full(client: TestClient, alice: Headers,
                                                     uploaded: dict[str, Any]) -> None:
    state = client.app.state.scaleot  # type: ignore[attr-defined]
    adapter_id = uploaded["adapter"]["id"]
    url = f"/v1/adapters/{adapter_id}/generate"
    assert client.post(url, json={"prompt": "hi", "max_new_tokens": 2}, headers=alice).status_code == 200
    scheduler = state.serving().served("tiny-gpt2").scheduler
    scheduler.queue_limit = 0  # as when hundreds of requests wait already
    response = client.post(url, json={"prompt": "hi", "max_new_tokens": 2}, headers=alice)
    assert response.status_code == 503 and response.headers["retry-after"] == "2", response.text
    assert state.serving().pool._pins == {}  # the refused request left nothing pinned
    scheduler.queue_limit = 4
    assert client.post(url, json={"prompt": "hi", "max_new_tokens": 2}, headers=alice).status_code == 200
    state.plugged.discard(adapter_id)
    assert adapter_id not in state.serving().pool
