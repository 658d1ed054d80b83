"""A database outage fails no work for good (issue 27 item 6).

SQLite: another connection holds the write lock longer than the (short, test-configured) busy timeout.
PostgreSQL (with SCALEOT_TEST_POSTGRES_URL, as scripts/test.sh's PostgreSQL pass sets it): the service's
connections are terminated with pg_terminate_backend. Either way a write of the API answers 503 with
Retry-After and a clean message (no SQL), and a job's progress writes, heartbeats and outcome wait for
the database instead of failing the job.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from model_owner_server.db.outage import RETRY_AFTER_S
from model_owner_server.jobs import queue
from model_owner_server.jobs.worker import Worker
from model_owner_server.settings import Settings
from shared.job_outcomes import SERVICE_ROWS
from tests.service.conftest import ADMIN, UNIFORM, Headers, make_settings, new_owner

POSTGRES = bool(os.environ.get("SCALEOT_TEST_POSTGRES_URL"))
SQLITE_ONLY = pytest.mark.skipif(POSTGRES, reason="SQLite's write lock; this pass runs on PostgreSQL (the SQLite "
                                 "pass of scripts/test.sh runs it)")
POSTGRES_ONLY = pytest.mark.skipif(not POSTGRES, reason="needs a PostgreSQL server: set SCALEOT_TEST_POSTGRES_URL "
                                   "(scripts/test.sh starts one on loopback for its PostgreSQL pass)")
BUSY_S = 0.3  # SQLite busy timeout in these tests: a write waits this long for the lock, then fails
ReportFn = Callable[..., bool]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data", db_busy_timeout_s=BUSY_S, db_retry_s=60.0)


@contextmanager
def write_lock(settings: Settings) -> Iterator[None]:
    """Another connection holds SQLite's write lock (readers go on: WAL)."""
    holder = sqlite3.connect(make_url(settings.db_url).database or "", isolation_level=None, timeout=10)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def hold_write_lock(settings: Settings, seconds: float) -> None:
    """Take the write lock now and keep it for `seconds` from a background thread."""
    taken = threading.Event()

    def hold() -> None:
        with write_lock(settings):
            taken.set()
            threading.Event().wait(seconds)

    threading.Thread(target=hold, daemon=True).start()
    assert taken.wait(10)


def terminate_other_connections(settings: Settings) -> int:
    """pg_terminate_backend on every other connection to the test database (the API's and the worker's)."""
    admin = create_engine(settings.db_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            return len(connection.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")).all())
    finally:
        admin.dispose()


def outage(settings: Settings) -> None:
    assert terminate_other_connections(settings) >= 1


def interrupt_progress(monkeypatch: pytest.MonkeyPatch, starts: tuple[str, ...], outage: Callable[[], None]
                       ) -> list[str]:
    """At the job's first progress message starting with one of `starts`, call `outage()`, then let the
    write go on; returns the errors the progress writes raised (each one then retried by the worker)."""
    real_report: ReportFn = queue.report
    errors: list[str] = []
    done = threading.Event()

    def report(engine: Any, job_id: str, worker_id: str, progress: float, message: str) -> bool:
        if message.startswith(starts) and not done.is_set():
            done.set()
            outage()
        try:
            return real_report(engine, job_id, worker_id, progress, message)
        except OperationalError as exc:
            errors.append(str(exc.orig))
            raise

    monkeypatch.setattr(queue, "report", report)
    return errors


def evaluate(client: TestClient, worker: Worker, alice: Headers, adapter_id: str) -> dict[str, Any]:
    response = client.post("/v1/evaluations", json={"adapter_id": adapter_id, "task": "winowhy", "limit": 4},
                           headers=alice)
    assert response.status_code == 202, response.text
    worker.run_until_idle()
    return dict(client.get(f"/v1/evaluations/{response.json()['id']}", headers=alice).json())


@SQLITE_ONLY
def test_writes_on_a_locked_database_answer_503_with_retry_after(client: TestClient, alice: Headers,
                                                                  settings: Settings) -> None:
    with write_lock(settings):
        for response in (client.post("/v1/emulators", json=UNIFORM, headers=alice),
                         client.post("/v1/owners", json={"name": "carol"}, headers=ADMIN)):
            assert response.status_code == 503, response.text
            assert response.headers["Retry-After"] == str(RETRY_AFTER_S)
            detail = response.json()["detail"]
            assert "retry" in detail and "INSERT" not in detail and "[SQL" not in detail, detail
        assert client.get("/v1/emulators", headers=alice).status_code == 200  # reads go on (WAL)
    assert client.post("/v1/emulators", json=UNIFORM, headers=alice).status_code == 202  # the lock is gone
    assert client.post("/v1/owners", json={"name": "carol"}, headers=ADMIN).status_code == 201


@SQLITE_ONLY
def test_a_locked_database_mid_evaluation_is_waited_for(client: TestClient, worker: Worker, alice: Headers,
                                                        uploaded: dict[str, Any], settings: Settings,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    errors = interrupt_progress(monkeypatch, SERVICE_ROWS, lambda: hold_write_lock(settings, 6 * BUSY_S))
    with caplog.at_level(logging.WARNING, logger="scaleot"):
        done = evaluate(client, worker, alice, uploaded["adapter"]["id"])
    assert done["status"]["state"] == "succeeded", done["status"]
    assert done["status"]["attempts"] == 1 and done["result"]["rows"]["plug_in"]["n"] == 4
    assert errors and all("database is locked" in e for e in errors)  # the progress write hit the lock...
    assert any("retrying" in r.getMessage() and "progress" in r.getMessage() for r in caplog.records)  # ...retried
    assert any(r.getMessage().startswith("heartbeat of job") for r in caplog.records)  # the heartbeat survived it


@SQLITE_ONLY
def test_an_outage_past_the_retry_budget_requeues_the_job_instead_of_failing_it(
        client: TestClient, worker: Worker, alice: Headers, uploaded: dict[str, Any], settings: Settings,
        monkeypatch: pytest.MonkeyPatch) -> None:
    worker.services.settings = settings.model_copy(update={"db_retry_s": 3 * BUSY_S})
    real_report: ReportFn = queue.report
    real_release = queue.release
    released: list[str] = []

    def locked_report(engine: Any, job_id: str, worker_id: str, progress: float, message: str) -> bool:
        if message.startswith(SERVICE_ROWS) and not released:  # every try of the first attempt finds it locked
            with write_lock(settings):
                return real_report(engine, job_id, worker_id, progress, message)
        return real_report(engine, job_id, worker_id, progress, message)

    def release(engine: Any, job_id: str, worker_id: str, message: str) -> bool:
        released.append(message)
        return real_release(engine, job_id, worker_id, message)

    monkeypatch.setattr(queue, "report", locked_report)
    monkeypatch.setattr(queue, "release", release)
    done = evaluate(client, worker, alice, uploaded["adapter"]["id"])
    assert released == ["requeued: the database was unavailable"]  # given back, not failed...
    assert done["status"]["state"] == "succeeded", done["status"]  # ...and run again once the lock was gone
    assert done["status"]["attempts"] == 1 and done["status"]["error"] is None  # the outage used no attempt


@POSTGRES_ONLY
def test_postgres_connections_terminated_answer_503_then_recover(client: TestClient, alice: Headers,
                                                                 settings: Settings) -> None:
    bob = new_owner(client, "bob")  # a key the API has not seen yet: the request guard looks it up
    assert terminate_other_connections(settings) >= 1
    guarded = client.get("/v1/emulators", headers=bob)
    assert guarded.status_code == 503 and guarded.headers["Retry-After"] == str(RETRY_AFTER_S), guarded.text
    assert client.get("/v1/emulators", headers=bob).status_code == 200  # the pool reconnected

    terminate_other_connections(settings)
    write = client.post("/v1/emulators", json=UNIFORM, headers=alice)  # alice's key is remembered: the route fails
    assert write.status_code == 503 and "retry" in write.json()["detail"], write.text
    assert "SELECT" not in write.text and "[SQL" not in write.text
    assert client.post("/v1/emulators", json=UNIFORM, headers=alice).status_code == 202


def read_until_up(client: TestClient, path: str, headers: Headers) -> dict[str, Any]:
    """The API's own pooled connections were terminated too: its first request may answer 503."""
    for _ in range(3):
        response = client.get(path, headers=headers)
        if response.status_code != 503:
            assert response.status_code == 200, response.text
            return dict(response.json())
    raise AssertionError(f"{path} kept answering 503")


@POSTGRES_ONLY
def test_postgres_connections_terminated_mid_build_and_mid_evaluation(
        client: TestClient, worker: Worker, alice: Headers, built: dict[str, Any], settings: Settings,
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # mid-build
    errors = interrupt_progress(monkeypatch, ("stage 2",), lambda: outage(settings))
    emulator_id = client.post("/v1/emulators", json={**UNIFORM, "beta": 0.0}, headers=alice).json()["id"]
    worker.run_until_idle()
    emulator = read_until_up(client, f"/v1/emulators/{emulator_id}", alice)
    assert emulator["status"]["state"] == "succeeded" and emulator["status"]["attempts"] == 1, emulator["status"]
    assert errors, "the build's progress write did not meet the terminated connection"

    # mid-evaluation, of an adapter uploaded on the first emulator
    data = (built["adapter_dir"] / "adapter.safetensors").read_bytes()
    files = [("file", ("adapter.safetensors", data, "application/octet-stream"))]
    adapter = client.post("/v1/adapters", data={"emulator_id": built["emulator"]["id"]}, files=files, headers=alice)
    assert adapter.status_code == 201, adapter.text
    errors = interrupt_progress(monkeypatch, SERVICE_ROWS, lambda: outage(settings))
    response = client.post("/v1/evaluations", json={"adapter_id": adapter.json()["id"], "task": "winowhy",
                                                    "limit": 4}, headers=alice)
    assert response.status_code == 202, response.text
    worker.run_until_idle()
    done = read_until_up(client, f"/v1/evaluations/{response.json()['id']}", alice)
    assert done["status"]["state"] == "succeeded" and done["status"]["attempts"] == 1, done["status"]
    assert errors, "the evaluation's progress write did not meet the terminated connection"
