"""A failed job's `error`, as the API shows it, names the kind of failure without the server's paths
or SQL; the worker's log keeps the details (issue 27, item 9)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import IntegrityError

from model_owner_server.jobs.errors import public_error
from model_owner_server.jobs.runner import build_worker
from model_owner_server.jobs.worker import JobContext, WorkerServices
from model_owner_server.settings import Settings
from tests.service.conftest import UNIFORM, Headers

SQL = "UPDATE job SET progress=?, message=? WHERE job.id = ?"


def failures(data_dir: Path) -> dict[str, BaseException]:
    artifact = f"{data_dir}/artifacts/emulators/emu-1/emulator.safetensors"
    return {
        # not a transient error: a locked or unreachable database is retried, the job not failed (test_db_outage.py)
        "database": IntegrityError(SQL, (0.5, "step 2", "job-1"), Exception("NOT NULL constraint failed: job.message")),
        "file": FileNotFoundError(2, "No such file or directory", artifact),
        "message with a path": ValueError(f"cannot read {artifact}: header too large"),
        "wrapped SQL": RuntimeError(f"progress write failed: (sqlite3.OperationalError) locked\n[SQL: {SQL}]"),
    }


@pytest.mark.parametrize("case", ["database", "file", "message with a path", "wrapped SQL"])
def test_failed_job_error_shows_no_path_or_sql(client: TestClient, alice: Headers, settings: Settings,
                                               case: str, caplog: pytest.LogCaptureFixture) -> None:
    raised = failures(settings.data_dir)[case]

    def failing(ctx: JobContext, services: WorkerServices) -> str:
        raise raised

    worker = build_worker(settings, worker_id="test-worker")
    worker.handlers = {**worker.handlers, "emulator_build": failing}
    emulator_id = client.post("/v1/emulators", json=UNIFORM, headers=alice).json()["id"]
    with caplog.at_level(logging.ERROR, logger="scaleot.worker"):
        assert worker.run_until_idle() == 1
    status = client.get(f"/v1/emulators/{emulator_id}", headers=alice).json()["status"]
    assert status["state"] == "failed"
    error = status["error"]
    assert error.startswith(type(raised).__name__)
    for internal in (str(settings.data_dir), "/artifacts/", "UPDATE", "[SQL", "job.id"):
        assert internal not in error, (internal, error)
    if case == "message with a path":
        assert "cannot read emulator.safetensors: header too large" in error  # the reason itself stays
    if case in ("database", "file"):
        assert status["job_id"] in error  # the operator finds the details in the log by this id
    assert any(record.exc_info and record.exc_info[1] is raised for record in caplog.records)  # logged in full


def test_public_error_keeps_plain_reasons_and_api_paths() -> None:
    plain = ValueError("stage-1 batch_size 3 is not divisible by 2 processes")
    assert public_error(plain, "job-1") == "ValueError: stage-1 batch_size 3 is not divisible by 2 processes"
    hint = LookupError("emulator emu-1 no longer exists; request it again with POST /v1/emulators")
    assert public_error(hint, "job-1").endswith("POST /v1/emulators")
    assert "https://sqlalche.me/e/20/e3q8" in public_error(ValueError("see https://sqlalche.me/e/20/e3q8"), "j")
    assert public_error(KeyError(), "job-9") == "KeyError; the model owner's server log has the details (job job-9)"
