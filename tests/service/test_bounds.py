"""Issue 11, class 5: evaluation and generation bounds. `limit` is honoured for an uploaded JSONL;
every numeric field has documented bounds and answers 422 outside them (they were 500s); generation
checks the model's context window; the multipart `task` field has a length limit."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from model_owner_server.jobs.worker import Worker
from tests.service.conftest import Headers

MC = [{"context": f"Question {i}: the sky is", "choices": [" blue", " green"], "label": 0} for i in range(50)]


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def test_limit_is_honoured_for_an_uploaded_jsonl(client: TestClient, worker: Worker, alice: Headers,
                                                 uploaded: dict[str, Any]) -> None:
    response = client.post("/v1/evaluations", data={"adapter_id": uploaded["adapter"]["id"], "limit": "2"},
                           files=[("file", ("many.jsonl", jsonl(MC)))], headers=alice)
    assert response.status_code == 202, response.text
    assert response.json()["limit"] == 2
    worker.run_until_idle()
    done = client.get(f"/v1/evaluations/{response.json()['id']}", headers=alice).json()
    assert done["state"] == "succeeded", done["status"]
    assert {row["n"] for row in done["result"]["rows"].values()} == {2}  # 2 rows scored, not 50


@pytest.mark.parametrize("limit", ["0", "²", "-1", "1.5", str(2**63), "9" * 40, "100001"])
def test_bad_multipart_limit_is_422(client: TestClient, alice: Headers, limit: str) -> None:
    response = client.post("/v1/evaluations", data={"adapter_id": "ada-x", "limit": limit},
                           files=[("file", ("a.jsonl", jsonl(MC[:2])))], headers=alice)
    assert response.status_code == 422, response.text
    assert any("limit" in p for p in response.json()["detail"]["problems"])


@pytest.mark.parametrize("limit", [0, -1, 2**63, 2**64 + 5, "²", 1.5, 100_001])
def test_bad_json_limit_is_422(client: TestClient, alice: Headers, limit: Any) -> None:
    response = client.post("/v1/evaluations", json={"adapter_id": "ada-x", "task": "winowhy", "limit": limit},
                           headers=alice)
    assert response.status_code == 422, response.text


def test_multipart_task_name_has_a_length_limit(client: TestClient, alice: Headers) -> None:
    response = client.post("/v1/evaluations", data={"adapter_id": "ada-x", "task": "t" * 10_000},
                           files=[("file", ("a.jsonl", jsonl(MC[:2])))], headers=alice)
    assert response.status_code == 422
    assert any("task" in p for p in response.json()["detail"]["problems"])


@pytest.mark.parametrize("change", [
    {"seed": 2**70}, {"seed": -(2**70)}, {"seed": -1}, {"temperature": 1e-300}, {"temperature": 0.001},
    {"temperature": 6.0}, {"max_new_tokens": 10**9}, {"max_new_tokens": 0}, {"top_p": 0.0}, {"top_p": 1.5},
])
def test_generation_numbers_out_of_bounds_are_422(client: TestClient, alice: Headers, change: dict[str, Any]) -> None:
    response = client.post("/v1/adapters/ada-x/generate", json={"prompt": "hi", **change}, headers=alice)
    assert response.status_code == 422, response.text


def test_generation_checks_the_context_window(client: TestClient, alice: Headers, uploaded: dict[str, Any]) -> None:
    url = f"/v1/adapters/{uploaded['adapter']['id']}/generate"  # tiny-gpt2: 512 positions
    too_long = client.post(url, json={"prompt": "hello " * 500, "max_new_tokens": 64}, headers=alice)
    assert too_long.status_code == 422, too_long.text
    assert "context window of 512" in too_long.json()["detail"]
    fits = client.post(url, json={"prompt": "hello " * 40, "max_new_tokens": 4, "temperature": 0.01,
                                  "seed": 2**32 - 1}, headers=alice)
    assert fits.status_code == 200, fits.text


@pytest.mark.parametrize("change", [{"adapter_bottom": 2**63}, {"adapter_top": 10**30}, {"alpha": 1e308},
                                    {"base_model": "m" * 401}])
def test_emulator_numbers_out_of_bounds_are_422(client: TestClient, alice: Headers, change: dict[str, Any]) -> None:
    body = {"base_model": "tiny-gpt2", "method": "uniform", "alpha": 0.5, **change}
    assert client.post("/v1/emulators", json=body, headers=alice).status_code == 422


@pytest.mark.parametrize("value", [0, 1, "true", "false", "0", 1.0, None])
def test_generation_switches_are_strict_booleans(client: TestClient, alice: Headers, value: Any) -> None:
    """`"chat": 0` was read as false (issue 27, item 9): only JSON true/false pass, anything else is a
    422 that names the field."""
    response = client.post("/v1/adapters/ada-x/generate", json={"prompt": "hi", "chat": value}, headers=alice)
    assert response.status_code == 422, response.text
    assert [e["loc"] for e in response.json()["detail"]] == [["body", "chat"]]
    for ok in (True, False):  # past validation: the unknown adapter is what answers
        assert client.post("/v1/adapters/ada-x/generate", json={"prompt": "hi", "chat": ok},
                           headers=alice).status_code == 404


@pytest.mark.parametrize("switch", ["harmonizers", "importance", "src", "refit", "distill"])
def test_emulator_option_switches_are_strict_booleans(client: TestClient, alice: Headers, switch: str) -> None:
    for value in (0, 1, "false"):
        body = {"base_model": "tiny-gpt2", "method": "uniform", "alpha": 0.5, "options": {switch: value}}
        response = client.post("/v1/emulators", json=body, headers=alice)
        assert response.status_code == 422, (value, response.text)
        assert [e["loc"] for e in response.json()["detail"]] == [["body", "options", switch]]
