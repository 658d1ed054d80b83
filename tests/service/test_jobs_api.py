"""GET /v1/jobs (paginated, filtered, owner-scoped), GET /v1/jobs/{id}, /v1/jobs/summary and the admin's
POST /v1/jobs/{id}/cancel: documented in OpenAPI and authenticated like every /v1 route."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from model_owner_server.jobs import queue
from model_owner_server.jobs.worker import Worker
from tests.service.conftest import ADMIN, UNIFORM, Headers


def request(client: TestClient, headers: Headers, **changes: Any) -> str:
    response = client.post("/v1/emulators", json={**UNIFORM, **changes}, headers=headers)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["status"]["job_id"]
    return job_id


def test_jobs_are_listed_paginated_and_scoped(client: TestClient, worker: Worker, alice: Headers,
                                              bob: Headers) -> None:
    alice_jobs = [request(client, alice, beta=beta) for beta in (0.0, 0.25, 0.5)]
    bob_job = request(client, bob, alpha=0.25)

    everything = client.get("/v1/jobs", headers=ADMIN).json()
    assert everything["total"] == 4 and {j["id"] for j in everything["items"]} == {*alice_jobs, bob_job}
    first = client.get("/v1/jobs?limit=2", headers=ADMIN).json()
    second = client.get("/v1/jobs?limit=2&offset=2", headers=ADMIN).json()
    assert first["total"] == 4 and len(first["items"]) == 2 and len(second["items"]) == 2
    assert {j["id"] for j in first["items"]}.isdisjoint(j["id"] for j in second["items"])

    mine = client.get("/v1/jobs", headers=alice).json()
    assert mine["total"] == 3 and {j["id"] for j in mine["items"]} == set(alice_jobs)
    assert client.get(f"/v1/jobs/{bob_job}", headers=alice).status_code == 404  # not confirmed to exist
    assert client.get(f"/v1/jobs/{bob_job}", headers=bob).json()["kind"] == "emulator_build"
    assert client.get("/v1/jobs/job-doesnotexist", headers=ADMIN).status_code == 404
    assert client.get("/v1/jobs/%00<x>", headers=ADMIN).status_code == 404

    claimed = queue.claim(worker.services.engine, "worker-7", 30.0)
    assert claimed is not None
    running = client.get(f"/v1/jobs/{claimed.id}", headers=ADMIN).json()
    assert running["state"] == "running" and running["worker"] == "worker-7" and running["attempts"] == 1
    assert running["queued_s"] >= 0 and running["run_s"] >= 0
    assert client.get("/v1/jobs?state=running", headers=ADMIN).json()["total"] == 1
    summary = client.get("/v1/jobs/summary", headers=ADMIN).json()
    assert summary["by_state"]["queued"] == 3 and summary["workers_alive"] == ["worker-7"]
    assert client.get("/v1/jobs/summary", headers=bob).json()["workers_alive"] in ([], ["worker-7"])

    assert client.get("/v1/jobs?state=sleeping", headers=ADMIN).status_code == 422
    assert client.get("/v1/jobs?limit=0", headers=ADMIN).status_code == 422
    assert client.get("/v1/jobs?kind=mining", headers=ADMIN).status_code == 422


def test_cancel_is_for_the_admin(client: TestClient, worker: Worker, alice: Headers) -> None:
    queued = request(client, alice)
    assert client.post(f"/v1/jobs/{queued}/cancel", headers=alice).status_code == 403
    cancelled = client.post(f"/v1/jobs/{queued}/cancel", headers=ADMIN)
    assert cancelled.status_code == 202 and cancelled.json()["state"] == "cancelled"
    assert client.post(f"/v1/jobs/{queued}/cancel", headers=ADMIN).status_code == 409

    built = request(client, alice, beta=0.0)
    worker.run_until_idle()
    assert client.get(f"/v1/jobs/{built}", headers=alice).json()["state"] == "succeeded"
    assert client.post(f"/v1/jobs/{built}/cancel", headers=ADMIN).status_code == 409
    assert client.post("/v1/jobs/job-nothing/cancel", headers=ADMIN).status_code == 404


def test_jobs_need_a_key_and_are_documented(client: TestClient) -> None:
    assert client.get("/v1/jobs").status_code == 401
    assert client.get("/v1/jobs/summary", headers={"Authorization": "Bearer nope"}).status_code == 401
    paths = client.get("/openapi.json").json()["paths"]
    assert {"401", "422"} <= set(paths["/v1/jobs"]["get"]["responses"])
    assert "404" in paths["/v1/jobs/{job_id}"]["get"]["responses"]
    assert {"401", "403", "404", "409"} <= set(paths["/v1/jobs/{job_id}/cancel"]["post"]["responses"])
    assert "server log" in paths["/v1/jobs/{job_id}"]["get"]["description"]
