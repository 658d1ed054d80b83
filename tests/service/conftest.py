"""Fixtures for the service tests: an app on a temporary data dir, keys, an in-process worker, and
helpers that build/download an emulator and train a real adapter on it (tiny models, seconds)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from model_owner_server.app.main import create_app
from model_owner_server.jobs.runner import build_worker
from model_owner_server.jobs.worker import Worker
from model_owner_server.settings import Settings
from tests.service.adapters import make_adapter
from tests.service.s3_server import S3Server, running_s3_server

ADMIN_KEY = "admin-key-for-tests-0123456789"
TINY = ["tiny-llama", "tiny-gpt2", "tiny-qwen2", "tiny-opt"]
UNIFORM = {"base_model": "tiny-gpt2", "method": "uniform", "alpha": 0.5, "beta": 0.5, "adapter_bottom": 1,
           "adapter_top": 1}

Headers = dict[str, str]


def auth(key: str) -> Headers:
    return {"Authorization": f"Bearer {key}"}


ADMIN = auth(ADMIN_KEY)


def fresh_postgres_database() -> str | None:
    """With SCALEOT_TEST_POSTGRES_URL (a server URL), every test gets a new database on that server,
    so the same tests run on Postgres; without it they use SQLite in the test's data dir."""
    server = os.environ.get("SCALEOT_TEST_POSTGRES_URL")
    if not server:
        return None
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"t_{secrets.token_hex(6)}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(server).set(database=name).render_as_string(hide_password=False)


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": fresh_postgres_database(),
        "data_dir": data_dir, "admin_key": ADMIN_KEY, "models": TINY, "max_upload_bytes": 4_000_000,
        "heartbeat_s": 0.2, "lease_s": 30.0, "worker_poll_s": 0.1, "eval_limit": 8,
        # off: many tests queue more jobs per owner than the defaults allow; test_quotas.py turns them on
        "quota_active_jobs": 0, "quota_builds_per_day": 0, "quota_stored_mb": 0,
    }
    stage1 = {"steps": 2, "batch_size": 2, "seq_len": 32, "harmonizer_rank": 8, **overrides.pop("stage1", {})}
    values.update(overrides, stage1=stage1)
    return Settings(**values)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3-compatible server (moto's, in a subprocess) for the whole session; see s3_server.py."""
    with running_s3_server(tmp_path_factory.mktemp("s3-server")) as server:
        yield server


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def worker(settings: Settings) -> Worker:
    return build_worker(settings, worker_id="test-worker")


def new_owner(client: TestClient | httpx.Client, name: str) -> Headers:
    response = client.post("/v1/owners", json={"name": name}, headers=ADMIN)
    assert response.status_code == 201, response.text
    return auth(response.json()["api_key"])


@pytest.fixture
def alice(client: TestClient) -> Headers:
    return new_owner(client, "alice")


@pytest.fixture
def bob(client: TestClient) -> Headers:
    return new_owner(client, "bob")


def build(client: TestClient, worker: Worker, headers: Headers, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """Request an emulator, run the worker until idle, return the emulator (must have succeeded)."""
    response = client.post("/v1/emulators", json=spec or UNIFORM, headers=headers)
    assert response.status_code == 202, response.text
    worker.run_until_idle()
    emulator: dict[str, Any] = client.get(f"/v1/emulators/{response.json()['id']}", headers=headers).json()
    assert emulator["status"]["state"] == "succeeded", emulator["status"]
    return emulator


def download(client: TestClient | httpx.Client, headers: Headers, emulator: dict[str, Any], dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for entry in emulator["files"]:
        response = client.get(entry["url"], headers=headers)
        assert response.status_code == 200, response.text
        (dest / entry["name"]).write_bytes(response.content)
    return dest


@pytest.fixture
def built(client: TestClient, worker: Worker, alice: Headers, tmp_path: Path) -> dict[str, Any]:
    """A uniform tiny-gpt2 emulator built for alice, downloaded, and a full-block adapter for it."""
    emulator = build(client, worker, alice)
    emu_dir = download(client, alice, emulator, tmp_path / "emulator")
    make_adapter(emu_dir, tmp_path / "adapter")
    return {"emulator": emulator, "dir": emu_dir, "adapter_dir": tmp_path / "adapter"}


def upload(client: TestClient | httpx.Client, headers: Headers, emulator_id: str,
           files: list[tuple[str, bytes]]) -> httpx.Response:
    parts = [("file", (name, data, "application/octet-stream")) for name, data in files]
    return client.post("/v1/adapters", data={"emulator_id": emulator_id}, files=parts, headers=headers)


@pytest.fixture
def uploaded(client: TestClient, alice: Headers, built: dict[str, Any]) -> dict[str, Any]:
    data = (built["adapter_dir"] / "adapter.safetensors").read_bytes()
    response = upload(client, alice, built["emulator"]["id"], [("adapter.safetensors", data)])
    assert response.status_code == 201, response.text
    return {**built, "adapter": response.json()}

