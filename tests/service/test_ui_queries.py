"""The dashboard's list pages issue a fixed number of SQL statements, however many rows they show (no query per
row: `bench ui-pages` found the evaluations list asking for each evaluation's job on its own)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlmodel import Session

from model_owner_server.app.main import create_app
from model_owner_server.db.models import Adapter, Emulator, Evaluation, Job, JobKind
from tests.service.conftest import ADMIN_KEY, make_settings
from tests.service.ui_helpers import sign_in


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(tmp_path / "data"))) as test_client:
        yield test_client


def _adapter(engine: Any) -> str:
    """An adapter on an unbuilt emulator (the rows the evaluations need)."""
    with Session(engine) as db:
        build = Job(id=f"job-{secrets.token_hex(6)}", kind=JobKind.emulator_build, subject_id="emu-q")
        db.add(build)
        db.flush()
        emulator = Emulator(id=f"emu-{secrets.token_hex(6)}", base_model="tiny-gpt2", method="uniform",
                            spec_json="{}", job_id=build.id)
        db.add(emulator)
        db.flush()
        adapter = Adapter(id=f"ada-{secrets.token_hex(6)}", emulator_id=emulator.id, kind="full", files_json="{}")
        db.add(adapter)
        db.commit()
        return adapter.id


def _add_evaluations(engine: Any, adapter_id: str, n: int) -> list[str]:
    """`n` finished evaluations of the adapter on one task, each with its job."""
    ids = [f"eva-{secrets.token_hex(6)}" for _ in range(n)]
    with Session(engine) as db:
        jobs = [Job(id=f"job-{secrets.token_hex(6)}", kind=JobKind.evaluation, subject_id=i, state="succeeded")
                for i in ids]
        db.add_all(jobs)
        db.flush()
        db.add_all([Evaluation(id=i, adapter_id=adapter_id, task="winowhy", job_id=job.id)
                    for i, job in zip(ids, jobs, strict=True)])
        db.commit()
    return ids


def _statements(client: TestClient, path: str) -> int:
    engine = client.app.state.scaleot.engine  # type: ignore[attr-defined]
    count = [0]

    def counted(*_: Any) -> None:
        count[0] += 1

    event.listen(engine, "before_cursor_execute", counted)
    try:
        response = client.get(path)
    finally:
        event.remove(engine, "before_cursor_execute", counted)
    assert response.status_code == 200, response.text[:2000]
    return count[0]


def test_evaluation_lists_do_not_query_per_row(app_client: TestClient) -> None:
    """The evaluations list, an adapter's evaluations and an evaluation's same-task comparison."""
    engine = app_client.app.state.scaleot.engine  # type: ignore[attr-defined]
    sign_in(app_client, ADMIN_KEY)
    adapter_id = _adapter(engine)
    first = _add_evaluations(engine, adapter_id, 2)[0]
    pages = ["/ui/evaluations", f"/ui/adapters/{adapter_id}", f"/ui/evaluations/{first}"]
    few = {path: _statements(app_client, path) for path in pages}
    _add_evaluations(engine, adapter_id, 30)
    many = {path: _statements(app_client, path) for path in pages}
    assert many == few
    assert app_client.get("/ui/evaluations").text.count('<a href="/ui/evaluations/eva-') == 32
