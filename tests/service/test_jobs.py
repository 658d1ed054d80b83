"""The job queue: an orphaned running job (its worker died) is retried or failed with the reason,
never left running; cancellation stops a running job; a worker shutting down gives its job back."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from model_owner_server.app.main import create_app
from model_owner_server.jobs import queue
from model_owner_server.jobs.runner import build_worker
from model_owner_server.jobs.worker import Worker
from tests.service.conftest import UNIFORM, Headers, make_settings, new_owner

LONG_STAGE1 = {"base_model": "tiny-llama", "method": "scaleot", "alpha": 0.5, "adapter_bottom": 1, "adapter_top": 1}


def status(client: TestClient, headers: Headers, emulator_id: str) -> dict[str, Any]:
    result: dict[str, Any] = client.get(f"/v1/emulators/{emulator_id}", headers=headers).json()["status"]
    return result


def wait_for(predicate: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_orphaned_job_is_retried_then_failed(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", lease_s=0.3, max_attempts=2)
    with TestClient(create_app(settings)) as client:
        alice = new_owner(client, "alice")
        emulator_id = client.post("/v1/emulators", json=UNIFORM, headers=alice).json()["id"]
        worker = build_worker(settings, "survivor")
        engine = worker.services.engine
        # a worker claims the job and dies without a heartbeat
        assert queue.claim(engine, "crashed-worker", settings.lease_s) is not None
        assert status(client, alice, emulator_id)["state"] == "running"
        time.sleep(0.4)
        assert worker.run_until_idle() == 1  # recovered: requeued, then run by the survivor
        done = status(client, alice, emulator_id)
        assert done["state"] == "succeeded" and done["attempts"] == 2

        other = client.post("/v1/emulators", json={**UNIFORM, "beta": 0.0}, headers=alice).json()["id"]
        for dead in ("crashed-1", "crashed-2"):  # both attempts die
            assert queue.claim(engine, dead, settings.lease_s) is not None
            time.sleep(0.4)
            queue.recover_expired(engine)
        failed = status(client, alice, other)
        assert failed["state"] == "failed" and failed["attempts"] == 2
        assert "crashed-2 stopped heartbeating during attempt 2 of 2" in failed["error"]
        assert worker.run_until_idle() == 0  # a failed job is not picked up again...
        again = client.post("/v1/emulators", json={**UNIFORM, "beta": 0.0}, headers=alice).json()
        assert again["status"]["state"] == "queued"  # ...until requested again
        assert worker.run_until_idle() == 1


def run_in_thread(worker: Worker) -> threading.Thread:
    thread = threading.Thread(target=worker.run_once, daemon=True)
    thread.start()
    return thread


def test_cancel_running_job_and_release_on_shutdown(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", stage1={"steps": 100_000})
    with TestClient(create_app(settings)) as client:
        alice = new_owner(client, "alice")
        emulator_id = client.post("/v1/emulators", json=LONG_STAGE1, headers=alice).json()["id"]

        worker = build_worker(settings, "w1")
        thread = run_in_thread(worker)
        wait_for(lambda: "stage 1 training step" in status(client, alice, emulator_id)["message"])
        worker.shutdown.set()  # SIGTERM: the job goes back to the queue, the attempt is not counted
        thread.join(30)
        back = status(client, alice, emulator_id)
        assert back["state"] == "queued" and back["attempts"] == 0
        assert back["message"] == "requeued: worker shut down"

        worker = build_worker(settings, "w2")
        thread = run_in_thread(worker)
        wait_for(lambda: "stage 1 training step" in status(client, alice, emulator_id)["message"])
        response = client.post(f"/v1/emulators/{emulator_id}/cancel", headers=alice)
        assert response.status_code == 202
        thread.join(30)
        assert not thread.is_alive()
        cancelled = status(client, alice, emulator_id)
        assert cancelled["state"] == "cancelled" and cancelled["finished_at"] is not None
        assert client.post(f"/v1/emulators/{emulator_id}/cancel", headers=alice).status_code == 202  # idempotent


def test_two_workers_train_a_shared_profile_once(tmp_path: Path, monkeypatch: Any) -> None:
    """Two emulators of one base model need the same stage-1 profile: one worker trains it, the other
    waits for it (profile lock) instead of training it again over the first one's checkpoint."""
    from model_owner_server.emulators import stage1

    runs: list[str] = []
    real_run = stage1.run_stage1

    def counted(*args: Any, **kwargs: Any) -> Any:
        runs.append(threading.current_thread().name)
        return real_run(*args, **kwargs)

    monkeypatch.setattr(stage1, "run_stage1", counted)
    settings = make_settings(tmp_path / "data", stage1={"steps": 150})
    with TestClient(create_app(settings)) as client:
        alice = new_owner(client, "alice")
        ids = [client.post("/v1/emulators", json={**LONG_STAGE1, "alpha": alpha}, headers=alice).json()["id"]
               for alpha in (0.5, 0.25)]
        first = run_in_thread(build_worker(settings, "w1"))
        wait_for(lambda: "stage 1 training step" in status(client, alice, ids[0])["message"])
        second = run_in_thread(build_worker(settings, "w2"))
        wait_for(lambda: "waiting for it" in status(client, alice, ids[1])["message"]
                 or status(client, alice, ids[1])["state"] == "succeeded")
        first.join(60)
        second.join(60)
        assert [status(client, alice, i)["state"] for i in ids] == ["succeeded", "succeeded"]
    assert len(runs) == 1, runs
