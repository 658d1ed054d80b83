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


def test_a_503_on_openai_releases_only_its_own_pin(client: TestClient, alice: Headers,
                                                   uploaded: dict[str, Any]) -> None:
    """A refused /openai/v1 request releases its adapter pin once: released twice, it also dropped the pin
    of another request still using the adapter, which the pool could then evict under it."""
    state = client.app.state.scaleot  # type: ignore[attr-defined]
    adapter_id = uploaded["adapter"]["id"]
    body = {"model": adapter_id, "prompt": "hi", "max_tokens": 2, "temperature": 0}
    assert client.post("/openai/v1/completions", json=body, headers=alice).status_code == 200
    pool = state.serving().pool
    pool.acquire(adapter_id, lambda: None)  # another request's pin (the adapter is loaded: nothing is built)
    assert pool._pins == {adapter_id: 1}
    scheduler = state.serving().served("tiny-gpt2").scheduler
    scheduler.queue_limit = 0
    response = client.post("/openai/v1/completions", json=body, headers=alice)
    assert response.status_code == 503 and response.json()["error"]["code"] == "overloaded", response.text
    assert pool._pins == {adapter_id: 1}  # the other request's pin is still held
    pool.release(adapter_id)
    assert pool._pins == {}
