"""Issue 11, class 4: emulators are shared by their parameters, so a cancel withdraws only the
caller's request; the build stops only when no other data owner still wants it."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlmodel import Session

from model_owner_server.db.engine import make_engine
from model_owner_server.db.models import Job
from model_owner_server.jobs import queue
from model_owner_server.settings import Settings
from tests.service.conftest import ADMIN, UNIFORM, Headers


def job_of(settings: Settings, job_id: str) -> Job:
    with Session(make_engine(settings.db_url)) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def test_cancel_withdraws_only_the_callers_request(client: TestClient, alice: Headers, bob: Headers,
                                                  settings: Settings) -> None:
    emulator = client.post("/v1/emulators", json=UNIFORM, headers=alice).json()
    eid, job_id = emulator["id"], emulator["status"]["job_id"]
    assert client.post("/v1/emulators", json=UNIFORM, headers=bob).json()["id"] == eid
    queue.claim(make_engine(settings.db_url), "test-worker", 60.0)  # the build is running

    withdrawn = client.post(f"/v1/emulators/{eid}/cancel", headers=bob)
    assert withdrawn.status_code == 202 and withdrawn.json()["withdrawn"] is True
    assert withdrawn.json()["state"] == "running"
    assert not job_of(settings, job_id).cancel_requested  # alice still wants it: the build goes on
    assert client.get(f"/v1/emulators/{eid}", headers=bob).status_code == 404  # bob's request is gone
    assert client.get(f"/v1/emulators/{eid}", headers=alice).json()["state"] == "running"

    assert client.post("/v1/emulators", json=UNIFORM, headers=bob).json()["status"]["job_id"] == job_id  # rejoined
    client.post(f"/v1/emulators/{eid}/cancel", headers=bob)
    last = client.post(f"/v1/emulators/{eid}/cancel", headers=alice)  # nobody else wants it now
    assert last.status_code == 202 and last.json()["withdrawn"] is False
    assert job_of(settings, job_id).cancel_requested


def test_the_last_requester_stops_a_queued_build_and_the_admin_any(client: TestClient, alice: Headers, bob: Headers,
                                                                   settings: Settings) -> None:
    eid = client.post("/v1/emulators", json=UNIFORM, headers=alice).json()["id"]
    client.post("/v1/emulators", json=UNIFORM, headers=bob)
    client.post(f"/v1/emulators/{eid}/cancel", headers=bob)
    stopped = client.post(f"/v1/emulators/{eid}/cancel", headers=alice).json()
    assert stopped["state"] == "cancelled" and stopped["withdrawn"] is False
    assert client.get(f"/v1/emulators/{eid}", headers=alice).json()["state"] == "cancelled"  # still visible to alice

    again = client.post("/v1/emulators", json=UNIFORM, headers=alice).json()
    client.post("/v1/emulators", json=UNIFORM, headers=bob)
    assert again["state"] == "queued"
    by_admin = client.post(f"/v1/emulators/{eid}/cancel", headers=ADMIN).json()
    assert by_admin["state"] == "cancelled"  # the model owner stops a build for everyone
