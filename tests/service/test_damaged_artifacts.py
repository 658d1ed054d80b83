"""Damaged artifacts heal (issue 27 item 7): an emulator whose stored folder is deleted or corrupted is
not reported as usable, refuses downloads and adapter uploads with 410 saying what to do, fails an
evaluation with that reason, and is rebuilt when requested again; the scratch folders a killed process
left (an upload's, a build's) are cleared when the API or the worker starts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from model_owner_server.app.main import create_app
from model_owner_server.jobs.runner import build_worker
from model_owner_server.jobs.worker import Worker
from model_owner_server.settings import Settings
from model_owner_server.storage.scratch import scratch_dir, scratch_root
from shared.manifest import MANIFEST_NAME
from tests.service.conftest import UNIFORM, Headers, download, upload

WEIGHTS = "emulator.safetensors"


def stored(settings: Settings, emulator_id: str) -> Path:
    return settings.artifacts_dir / "emulators" / emulator_id


def adapter_bytes(built: dict[str, Any]) -> list[tuple[str, bytes]]:
    return [("adapter.safetensors", (built["adapter_dir"] / "adapter.safetensors").read_bytes())]


def status(client: TestClient, headers: Headers, emulator_id: str) -> dict[str, Any]:
    return dict(client.get(f"/v1/emulators/{emulator_id}", headers=headers).json())


def assert_reported_damaged(emulator: dict[str, Any], settings: Settings, missing: str) -> None:
    assert emulator["state"] == emulator["status"]["state"] == "failed", emulator["status"]
    error = emulator["status"]["error"]
    assert missing in error and "request it again" in error and str(settings.data_dir) not in error, error
    assert emulator["files"] == []


def test_a_deleted_emulator_refuses_uploads_reports_failed_and_is_rebuilt_on_request(
        client: TestClient, worker: Worker, alice: Headers, built: dict[str, Any], settings: Settings,
        tmp_path: Path) -> None:
    emulator_id = built["emulator"]["id"]
    shutil.rmtree(stored(settings, emulator_id))

    refused = upload(client, alice, emulator_id, adapter_bytes(built))  # the first use finds it gone
    assert refused.status_code == 410, refused.text
    assert "missing" in refused.json()["detail"] and "POST /v1/emulators" in refused.json()["detail"]
    assert_reported_damaged(status(client, alice, emulator_id), settings, f"{WEIGHTS}: missing")
    assert upload(client, alice, emulator_id, adapter_bytes(built)).status_code in (409, 410)  # still no 201

    again = client.post("/v1/emulators", json=UNIFORM, headers=alice)  # the same parameters: rebuilt
    assert again.status_code == 202 and again.json()["id"] == emulator_id
    assert again.json()["status"]["state"] == "queued"
    assert worker.run_until_idle() == 1
    rebuilt = status(client, alice, emulator_id)
    assert rebuilt["state"] == "succeeded", rebuilt["status"]
    assert set(rebuilt["manifest"]["files"]) == set(built["emulator"]["manifest"]["files"])
    download(client, alice, rebuilt, tmp_path / "again")  # every file there again
    assert upload(client, alice, emulator_id, adapter_bytes(built)).status_code == 201


def test_a_truncated_emulator_file_is_not_downloaded_and_is_not_succeeded(
        client: TestClient, alice: Headers, built: dict[str, Any], settings: Settings) -> None:
    emulator_id = built["emulator"]["id"]
    weights = stored(settings, emulator_id) / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:1000])
    for name in (MANIFEST_NAME, WEIGHTS):  # no file of a broken emulator goes out
        response = client.get(f"/v1/emulators/{emulator_id}/files/{name}", headers=alice)
        assert response.status_code in (409, 410), response.text
    assert_reported_damaged(status(client, alice, emulator_id), settings, f"{WEIGHTS}: 1000 bytes")
    listed = client.get("/v1/emulators", headers=alice).json()["items"]
    assert [e["state"] for e in listed if e["id"] == emulator_id] == ["failed"]


def test_a_corrupted_emulator_fails_its_evaluation_saying_what_to_do(
        client: TestClient, worker: Worker, alice: Headers, uploaded: dict[str, Any], settings: Settings) -> None:
    emulator_id = uploaded["emulator"]["id"]
    weights = stored(settings, emulator_id) / WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-8:] = bytes(8)  # same size, other bytes: only the sha256 tells (the worker checks it on loading)
    weights.write_bytes(bytes(data))
    response = client.post("/v1/evaluations", json={"adapter_id": uploaded["adapter"]["id"], "task": "winowhy",
                                                    "limit": 2}, headers=alice)
    assert response.status_code == 202, response.text
    worker.run_until_idle()
    evaluation = client.get(f"/v1/evaluations/{response.json()['id']}", headers=alice).json()
    assert evaluation["state"] == "failed"
    error = evaluation["status"]["error"]
    assert "EmulatorDamaged" in error and emulator_id in error and "run the evaluation again" in error, error
    assert str(settings.data_dir) not in error
    assert_reported_damaged(status(client, alice, emulator_id), settings, "sha256")
    assert client.post("/v1/emulators", json=UNIFORM, headers=alice).json()["status"]["state"] == "queued"


def killed_holding_a_scratch_folder(root: Path) -> Path:
    """A process that is SIGKILLed while its scratch folder is in use (an upload being received)."""
    code = ("import sys, time; from pathlib import Path; from model_owner_server.storage.scratch import scratch_dir\n"
            "with scratch_dir(Path(sys.argv[1]), 'upload-') as work:\n"
            "    (work / 'part-0').write_bytes(b'x' * 4096); print(work, flush=True); time.sleep(120)\n")
    process = subprocess.Popen([sys.executable, "-c", code, str(root)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    folder = Path(process.stdout.readline().strip())
    process.kill()  # kill -9: no cleanup runs
    process.wait(30)
    assert folder.is_dir()
    return folder


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_stale_temporaries_are_cleared_at_start_up_and_live_ones_kept(settings: Settings) -> None:
    root = scratch_root(settings.data_dir)
    killed_upload = killed_holding_a_scratch_folder(root)
    killed_build = killed_holding_a_scratch_folder(root)
    fresh = killed_holding_a_scratch_folder(root)  # left a moment ago: may not be locked yet, so kept
    stage1 = root / "stage1-job-1"  # the stage-1 launcher's: kept
    stage1.mkdir()
    for path in (killed_upload, killed_build, stage1):
        age(path, 3600)
    half_published = settings.artifacts_dir / "emulators" / ".emu-1.abc123"  # a publish killed mid-copy
    half_published.mkdir(parents=True)
    age(half_published, 2 * 3600)
    with scratch_dir(root, "upload-") as in_use:  # a live request's folder, however old
        age(in_use, 3600)
        create_app(settings)  # the API's start-up sweeps
        assert not killed_upload.exists() and not killed_build.exists() and not half_published.exists()
        assert in_use.is_dir() and fresh.is_dir() and stage1.is_dir()
    age(fresh, 3600)
    build_worker(settings, "w")  # the worker's start-up sweeps too
    assert not fresh.exists() and stage1.is_dir()
