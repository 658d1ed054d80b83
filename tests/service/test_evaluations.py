"""Evaluations (built-in task and uploaded JSONL) run in the worker and return the matrix; generation
uses the plugged model, cached per adapter."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient

from model_owner_server.jobs.worker import Worker
from tests.service.conftest import Headers

ROWS = {"full_zero_shot", "emulator_zero_shot", "emulator_fine_tuned", "plug_in"}
MC = [{"context": f"Question {i}: the sky is", "choices": [" blue", " green", " red"], "label": 0} for i in range(6)]


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def test_uploaded_jsonl_evaluation(client: TestClient, worker: Worker, alice: Headers,
                                   uploaded: dict[str, Any]) -> None:
    adapter_id = uploaded["adapter"]["id"]
    response = client.post("/v1/evaluations", data={"adapter_id": adapter_id, "task": "sky"},
                           files=[("file", ("sky.jsonl", jsonl(MC)))], headers=alice)
    assert response.status_code == 202, response.text
    evaluation = response.json()
    assert evaluation["source"] == "upload" and evaluation["status"]["state"] == "queued"
    assert worker.run_until_idle() == 1
    done = client.get(f"/v1/evaluations/{evaluation['id']}", headers=alice).json()
    assert done["status"]["state"] == done["state"] == "succeeded", done["status"]
    result = done["result"]
    assert set(result["rows"]) == ROWS and result["metric"] == "acc"
    assert all(row["n"] == len(MC) for row in result["rows"].values())
    assert result["adapter_changes_outputs"] is True
    expected_gap = 100 * (result["rows"]["plug_in"]["value"] - result["rows"]["emulator_fine_tuned"]["value"])
    assert abs(result["privacy_gap"] - expected_gap) < 1e-9


def test_builtin_task_evaluation(client: TestClient, worker: Worker, alice: Headers,
                                 uploaded: dict[str, Any]) -> None:
    response = client.post("/v1/evaluations", json={"adapter_id": uploaded["adapter"]["id"], "task": "winowhy",
                                                    "limit": 4}, headers=alice)
    assert response.status_code == 202, response.text
    worker.run_until_idle()
    done = client.get(f"/v1/evaluations/{response.json()['id']}", headers=alice).json()
    assert done["status"]["state"] == "succeeded", done["status"]
    assert done["result"]["task"] == "winowhy" and done["result"]["rows"]["plug_in"]["n"] == 4


def test_evaluation_request_errors(client: TestClient, alice: Headers, uploaded: dict[str, Any]) -> None:
    adapter_id = uploaded["adapter"]["id"]
    unknown = client.post("/v1/evaluations", json={"adapter_id": adapter_id, "task": "nope"}, headers=alice)
    assert unknown.status_code == 422 and "winowhy" in unknown.json()["detail"]
    missing = client.post("/v1/evaluations", json={"task": "winowhy"}, headers=alice)
    assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["adapter_id"]
    assert client.post("/v1/evaluations", json={"adapter_id": "ada-x", "task": "winowhy"},
                       headers=alice).status_code == 404
    assert client.post("/v1/evaluations", content=b"[", headers={**alice, "Content-Type": "application/json"}
                       ).status_code == 400
    bad_rows = jsonl(MC[:2]) + b'{"context": "x", "choices": ["a"], "label": 3}\nnot json\n'
    response = client.post("/v1/evaluations", data={"adapter_id": adapter_id},
                           files=[("file", ("mine.jsonl", bad_rows))], headers=alice)
    assert response.status_code == 422
    problems = response.json()["detail"]["problems"]
    assert any(p.startswith("mine.jsonl:3:") for p in problems) and any(p.startswith("mine.jsonl:4:") for p in problems)
    queued = client.post("/v1/evaluations", json={"adapter_id": adapter_id, "task": "winowhy"}, headers=alice).json()
    assert client.post(f"/v1/evaluations/{queued['id']}/cancel", headers=alice).json()["status"]["state"] == "cancelled"


def test_generate_with_plugged_model(client: TestClient, alice: Headers, uploaded: dict[str, Any]) -> None:
    url = f"/v1/adapters/{uploaded['adapter']['id']}/generate"
    first = client.post(url, json={"prompt": "hello", "max_new_tokens": 5}, headers=alice)
    assert first.status_code == 200, first.text
    body = first.json()
    # the upload's probe plugged the model already: the first generation finds it in the LRU
    assert body["new_tokens"] <= 5 and body["cached_model"] is True and isinstance(body["completion"], str)
    assert uploaded["adapter"]["id"] in client.app.state.scaleot.serving().pool  # loaded once for serving
    client.app.state.scaleot.plugged.discard(uploaded["adapter"]["id"])  # as after a restart: plugged again
    second = client.post(url, json={"prompt": "hello", "max_new_tokens": 5}, headers=alice).json()
    assert second["cached_model"] is False and second["completion"] == body["completion"]  # greedy, same model
    sampled = client.post(url, json={"prompt": "hi", "max_new_tokens": 3, "temperature": 0.8, "seed": 1},
                          headers=alice)
    assert sampled.status_code == 200
    for bad in ({"prompt": ""}, {"prompt": "x", "max_new_tokens": 0}, {"prompt": "x", "temperature": -1},
                {"prompt": "x", "unknown": 1}):
        assert client.post(url, json=bad, headers=alice).status_code == 422, bad
