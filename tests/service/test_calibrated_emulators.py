"""Task-calibrated emulators: a data owner uploads unlabelled prompts once, requests a scaleot emulator that
names them, and the worker refines its harmonizers on them. The prompts and the emulator stay that owner's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from model_owner_server.jobs.worker import Worker
from model_owner_server.settings import Settings
from tests.service.conftest import Headers

PROMPTS = [{"context": f"Request {i}: please play the song number {i}. Intent:", "choices": [" play", " stop"]}
           for i in range(12)]
SPEC = {"base_model": "tiny-llama", "method": "scaleot", "alpha": 0.5, "beta": 0.0, "adapter_bottom": 1,
        "adapter_top": 1}


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def upload(client: TestClient, headers: Headers, body: bytes) -> Any:
    return client.post("/v1/prompt-sets", files=[("file", ("prompts.jsonl", body))], headers=headers)


def test_a_calibrated_emulator_is_built_on_the_owners_prompts(client: TestClient, worker: Worker, alice: Headers,
                                                               bob: Headers) -> None:
    prompt_set = upload(client, alice, jsonl(PROMPTS))
    assert prompt_set.status_code == 201, prompt_set.text
    set_id = prompt_set.json()["id"]
    assert prompt_set.json()["n_prompts"] == 12 and len(prompt_set.json()["sha256"]) == 64
    plain = client.post("/v1/emulators", json=SPEC, headers=alice).json()
    calibrated = client.post("/v1/emulators", json={**SPEC, "calibration_prompts": set_id}, headers=alice)
    assert calibrated.status_code == 202, calibrated.text
    emulator_id = calibrated.json()["id"]
    assert emulator_id != plain["id"]
    worker.run_until_idle()
    built = client.get(f"/v1/emulators/{emulator_id}", headers=alice).json()
    assert built["state"] == "succeeded", built["status"]
    record = built["manifest"]["calibration"]
    assert record["prompts_sha256"] == prompt_set.json()["sha256"] and record["n_prompts"] + record["n_check"] == 12
    assert built["manifest"]["emulator_id"] == emulator_id
    assert client.get(f"/v1/emulators/{plain['id']}", headers=alice).json()["manifest"]["calibration"] is None
    # the same request again: the same emulator, nothing rebuilt
    again = client.post("/v1/emulators", json={**SPEC, "calibration_prompts": set_id}, headers=alice).json()
    assert again["id"] == emulator_id and again["state"] == "succeeded"
    # another data owner: cannot see or use the prompt set, and the same prompts of its own give another emulator
    assert client.get(f"/v1/prompt-sets/{set_id}", headers=bob).status_code == 404
    assert client.get("/v1/prompt-sets", headers=bob).json()["items"] == []
    assert client.post("/v1/emulators", json={**SPEC, "calibration_prompts": set_id}, headers=bob).status_code == 404
    assert client.get(f"/v1/emulators/{emulator_id}", headers=bob).status_code == 404
    own = upload(client, bob, jsonl(PROMPTS)).json()
    assert own["sha256"] == prompt_set.json()["sha256"]
    theirs = client.post("/v1/emulators", json={**SPEC, "calibration_prompts": own["id"]}, headers=bob).json()
    assert theirs["id"] != emulator_id  # never shared, so never confirmed to another owner


def test_bad_prompt_sets_and_requests_are_refused(client: TestClient, alice: Headers, settings: Settings) -> None:
    labelled = upload(client, alice, jsonl([*PROMPTS[:10], {**PROMPTS[0], "label": 1}]))
    assert labelled.status_code == 422
    assert any("prompts.jsonl:11" in p and "'label' not allowed" in p for p in labelled.json()["detail"]["problems"])
    targets = upload(client, alice, jsonl([{"context": "x", "target": "y"}] * 9))
    assert targets.status_code == 422 and "'target' not allowed" in json.dumps(targets.json())
    assert upload(client, alice, b"").status_code == 422
    few = upload(client, alice, jsonl(PROMPTS[:3]))
    assert few.status_code == 422 and "at least 8" in few.json()["detail"]
    assert client.get("/v1/prompt-sets", headers=alice).json()["items"] == []
    assert not [p for p in Path(settings.data_dir).rglob("*") if p.is_file() and "prompt-sets" in p.parts]
    long_rows = upload(client, alice, jsonl([{"context": "word " * 3000, "choices": ["a", "b"]}] * 8))
    assert long_rows.status_code == 201  # under the character cap; the token check needs the base model
    too_long = client.post("/v1/emulators", json={**SPEC, "calibration_prompts": long_rows.json()["id"]},
                           headers=alice)
    assert too_long.status_code == 422 and "context window" in json.dumps(too_long.json())
    set_id = upload(client, alice, jsonl(PROMPTS)).json()["id"]
    uniform = client.post("/v1/emulators", json={**SPEC, "method": "uniform", "calibration_prompts": set_id},
                          headers=alice)
    assert uniform.status_code == 422 and "harmonizers" in uniform.json()["detail"]
    unknown = client.post("/v1/emulators", json={**SPEC, "calibration_prompts": "pset-nope"}, headers=alice)
    assert unknown.status_code == 404
