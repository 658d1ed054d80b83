"""Agreement checks: unlabelled prompts scored on an emulator and the full model in the worker; only the
aggregates and a verdict come back; bad prompt files are refused with every problem and nothing stored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from model_owner_server.evaluation.agreement import TRANSFER_THRESHOLD
from model_owner_server.jobs.worker import Worker
from model_owner_server.settings import Settings
from tests.service.conftest import Headers

PROMPTS = [{"context": f"Question {i}: the sky is", "choices": [" blue", " green", " red"]} for i in range(5)]


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def check(client: TestClient, headers: Headers, emulator_id: str, rows: list[dict[str, Any]] | bytes) -> Any:
    body = rows if isinstance(rows, bytes) else jsonl(rows)
    return client.post(f"/v1/emulators/{emulator_id}/agreement", files=[("file", ("prompts.jsonl", body))],
                       headers=headers)


def test_a_check_answers_aggregates_and_a_verdict(client: TestClient, worker: Worker, alice: Headers, bob: Headers,
                                                  built: dict[str, Any]) -> None:
    emulator_id = built["emulator"]["id"]
    response = check(client, alice, emulator_id, [*PROMPTS, {"context": "no choices here"}])
    assert response.status_code == 202, response.text
    queued = response.json()
    assert queued["state"] == "queued" and queued["n_prompts"] == 6 and queued["id"].startswith("agr-")
    assert worker.run_until_idle() == 1
    done = client.get(f"/v1/agreements/{queued['id']}", headers=alice).json()
    assert done["state"] == "succeeded", done["status"]
    result = done["result"]
    assert set(result) == {"n_items", "agreement", "mean_kl", "threshold", "likely_to_transfer", "verdict"}
    assert result["n_items"] == 5 and 0 <= result["agreement"] <= 1 and result["mean_kl"] >= 0
    assert result["threshold"] == TRANSFER_THRESHOLD
    assert result["likely_to_transfer"] == (result["agreement"] >= TRANSFER_THRESHOLD)
    assert ("likely to transfer" if result["likely_to_transfer"] else "unlikely to transfer") in result["verdict"]
    assert [c["id"] for c in client.get("/v1/agreements", headers=alice).json()["items"]] == [queued["id"]]
    # another data owner sees neither the check nor may check an emulator it never requested
    assert client.get(f"/v1/agreements/{queued['id']}", headers=bob).status_code == 404
    assert client.get("/v1/agreements", headers=bob).json()["items"] == []
    assert check(client, bob, emulator_id, PROMPTS).status_code == 404
    assert client.post(f"/v1/agreements/{queued['id']}/cancel", headers=alice).status_code == 409


def test_bad_prompt_files_are_refused_and_nothing_is_stored(client: TestClient, alice: Headers,
                                                            built: dict[str, Any], settings: Settings) -> None:
    emulator_id = built["emulator"]["id"]
    labelled = check(client, alice, emulator_id, [PROMPTS[0], {**PROMPTS[1], "label": 0}, {"context": "x",
                                                                                          "target": "y"}])
    assert labelled.status_code == 422
    problems = labelled.json()["detail"]["problems"]
    assert any("prompts.jsonl:2" in p and "'label' not allowed" in p for p in problems)
    assert any("prompts.jsonl:3" in p and "'target' not allowed" in p for p in problems)
    empty = check(client, alice, emulator_id, b"")
    assert empty.status_code == 422 and "no rows" in json.dumps(empty.json())
    no_choices = check(client, alice, emulator_id, [{"context": "plain text"}])
    assert no_choices.status_code == 422 and "at least two choices" in no_choices.json()["detail"]
    too_long = check(client, alice, emulator_id, [{"context": "x" * 20_001, "choices": ["a", "b"]}])
    assert too_long.status_code == 422 and "at most 20000" in json.dumps(too_long.json())
    not_json = check(client, alice, emulator_id, b"{\n")
    assert not_json.status_code == 422 and "invalid JSON" in json.dumps(not_json.json())
    two_files = client.post(f"/v1/emulators/{emulator_id}/agreement", headers=alice,
                            files=[("file", ("a.jsonl", jsonl(PROMPTS))), ("file", ("b.jsonl", jsonl(PROMPTS)))])
    assert two_files.status_code == 422
    assert check(client, alice, "emu-nope", PROMPTS).status_code == 404
    assert client.get("/v1/agreements", headers=alice).json()["items"] == []
    stored = Path(settings.data_dir)
    assert not [p for p in stored.rglob("*") if p.is_file() and "agreements" in p.parts]


def test_a_queued_check_can_be_cancelled(client: TestClient, worker: Worker, alice: Headers,
                                         built: dict[str, Any]) -> None:
    queued = check(client, alice, built["emulator"]["id"], PROMPTS).json()
    cancelled = client.post(f"/v1/agreements/{queued['id']}/cancel", headers=alice)
    assert cancelled.status_code == 202
    worker.run_until_idle()
    assert client.get(f"/v1/agreements/{queued['id']}", headers=alice).json()["state"] == "cancelled"


def test_the_work_of_one_check_is_bounded(client: TestClient, alice: Headers, built: dict[str, Any]) -> None:
    emulator_id = built["emulator"]["id"]
    many = check(client, alice, emulator_id, [{"context": "q", "choices": [f"c{i}" for i in range(65)]}])
    assert many.status_code == 422 and "at most 64 per prompt" in json.dumps(many.json())
    rows = [{"context": f"q{i}", "choices": [f"c{j}" for j in range(64)]} for i in range(313)]  # 20,032 choices
    total = check(client, alice, emulator_id, rows)
    assert total.status_code == 422 and "at most 20000" in total.json()["detail"]
