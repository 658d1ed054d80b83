"""Per data owner quotas (issue 27 item 2): queued/running jobs, emulator builds per 24 h, stored bytes.
Past one: 429 with Retry-After, the message names the quota and its value, and nothing is created.
The admin key is exempt."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func
from sqlmodel import Session, col, select, update

from model_owner_server.db.engine import make_engine
from model_owner_server.db.models import Emulator, Job, PromptSet
from model_owner_server.settings import Settings
from tests.service.conftest import ADMIN, UNIFORM, Headers, make_settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # prompt sets are capped like JSON bodies: raised so that two uploads can pass 1 MiB
    return make_settings(tmp_path / "data", quota_active_jobs=2, quota_builds_per_day=3, quota_stored_mb=1,
                         max_json_bytes=2 * 1024 * 1024)


def count(settings: Settings, table: Any) -> int:
    with Session(make_engine(settings.db_url)) as session:
        return int(session.exec(select(func.count()).select_from(table)).one())


def emulator(client: TestClient, headers: Headers, alpha: float) -> Any:
    """A uniform tiny-gpt2 emulator: 6 middle blocks, so alphas 0.1, 0.25, 0.5, 0.7, 0.9 replace 1, 2, 3, 4, 5."""
    return client.post("/v1/emulators", json={**UNIFORM, "alpha": alpha}, headers=headers)


def test_active_jobs_quota(client: TestClient, alice: Headers, bob: Headers, settings: Settings) -> None:
    assert emulator(client, alice, 0.25).status_code == 202
    assert emulator(client, alice, 0.5).status_code == 202
    refused = emulator(client, alice, 0.9)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "30"
    assert "SCALEOT_QUOTA_ACTIVE_JOBS = 2" in refused.json()["detail"]
    assert (count(settings, Emulator), count(settings, Job)) == (2, 2)  # nothing created
    # attaching to a queued build (the same or an equivalent emulator) queues nothing: allowed
    assert emulator(client, alice, 0.5).status_code == 202
    assert emulator(client, alice, 0.5000001).json()["reused_equivalent"]
    assert emulator(client, bob, 0.9).status_code == 202  # per owner
    assert emulator(client, ADMIN, 0.1).status_code == 202  # the admin is exempt
    assert count(settings, Job) == 4


def test_builds_per_day_quota(client: TestClient, worker: Any, alice: Headers, settings: Settings) -> None:
    for alpha in (0.25, 0.5, 0.9):
        assert emulator(client, alice, alpha).status_code == 202
        worker.run_until_idle()  # finished: the active-jobs quota does not interfere
    refused = emulator(client, alice, 0.7)
    assert refused.status_code == 429
    assert "SCALEOT_QUOTA_BUILDS_PER_DAY = 3" in refused.json()["detail"]
    assert 86_000 < int(refused.headers["Retry-After"]) <= 86_400  # when the oldest build leaves the 24 h window
    assert count(settings, Emulator) == 3
    with Session(make_engine(settings.db_url)) as session:  # the oldest build was queued 23h58m20s ago
        oldest = session.exec(select(Job.id).order_by(col(Job.created_at))).first()
        assert oldest is not None
        session.exec(update(Job).where(col(Job.id) == oldest).values(created_at=time.time() - 86_300))
        session.commit()
    retry = int(emulator(client, alice, 0.7).headers["Retry-After"])
    assert 90 <= retry <= 100
    assert emulator(client, ADMIN, 0.7).status_code == 202
    with Session(make_engine(settings.db_url)) as session:  # the oldest left the window: one more may start
        session.exec(update(Job).where(col(Job.id) == oldest).values(created_at=time.time() - 86_401))
        session.commit()
    assert emulator(client, alice, 0.1).status_code == 202


def prompts(n: int = 40, chars: int = 19_000) -> bytes:
    """A prompt set of n long prompts (about n * chars bytes)."""
    rows = [{"context": f"{i} " + "x" * chars, "choices": [" yes", " no"]} for i in range(n)]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def upload_prompts(client: TestClient, headers: Headers, body: bytes) -> Any:
    return client.post("/v1/prompt-sets", files=[("file", ("prompts.jsonl", body))], headers=headers)


def test_stored_bytes_quota(client: TestClient, alice: Headers, bob: Headers, settings: Settings) -> None:
    body = prompts()  # about 0.73 MiB: one fits in 1 MiB, two do not
    first = upload_prompts(client, alice, body)
    assert first.status_code == 201, first.text
    refused = upload_prompts(client, alice, body)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "3600"
    assert "SCALEOT_QUOTA_STORED_MB = 1 MiB" in refused.json()["detail"]
    assert count(settings, PromptSet) == 1
    stored = list((settings.data_dir / "artifacts").rglob("prompts.jsonl"))
    assert len(stored) == 1  # nothing stored for the refused upload
    assert upload_prompts(client, bob, body).status_code == 201  # per owner
    assert upload_prompts(client, alice, prompts(8, 100)).status_code == 201  # a small one still fits
