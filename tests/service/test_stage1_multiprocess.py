"""A worker with SCALEOT_STAGE1_NPROC=2 runs stage 1 as a torchrun subprocess (2 ranks, gloo, DDP):
it reports the ranks' progress, a shutdown checkpoints and releases the job, the next attempt resumes,
a cancellation stops the whole process tree, and a batch size the ranks cannot split fails clearly."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from model_owner_server.app.main import create_app
from model_owner_server.emulators.profile import load_profile, profiles_root
from model_owner_server.jobs import queue
from model_owner_server.jobs.runner import build_worker
from model_owner_server.jobs.worker import Worker
from tests.service.conftest import build, make_settings, new_owner
from tests.service.test_jobs import LONG_STAGE1, status, wait_for


def stage1_processes(marker: Path) -> list[int]:
    """Live processes of the stage-1 tree started for this data dir (torchrun agent and ranks)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"stage1_launch" in cmdline and str(marker).encode() in cmdline:
            found.append(int(entry.name))
    return found


def run_in_thread(worker: Worker) -> threading.Thread:
    thread = threading.Thread(target=worker.run_once, daemon=True)
    thread.start()
    return thread


def step_of(message: str) -> int:
    match = re.match(r"stage 1 training step (\d+)/", message)
    return int(match.group(1)) if match else 0


def test_worker_runs_stage1_on_two_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings(tmp_path / "data", stage1_nproc=2, stage1={"steps": 3})
    messages: list[str] = []
    real_report = queue.report

    def recording(engine: object, job_id: str, worker_id: str, progress: float, message: str) -> bool:
        messages.append(message)
        return real_report(engine, job_id, worker_id, progress, message)  # type: ignore[arg-type]

    monkeypatch.setattr(queue, "report", recording)
    with TestClient(create_app(settings)) as client:
        alice = new_owner(client, "alice")
        emulator = build(client, build_worker(settings, "w"), alice, LONG_STAGE1)
    assert "stage 1 on 2 processes (cpu): starting" in messages
    assert any(step_of(m) for m in messages), messages
    assert "harmonizer" in [layer["kind"] for layer in emulator["manifest"]["layers"]]  # stage 2 used the profile
    profiles = [p for p in profiles_root().iterdir() if p.name.startswith("prof-")]
    assert len(profiles) == 1 and len(load_profile(profiles[0]).meta.curve) == 3
    assert not stage1_processes(settings.data_dir) and not list((settings.data_dir / "tmp").glob("stage1-*"))


def test_shutdown_resumes_and_cancel_stops_the_process_tree(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", stage1_nproc=2, stage1={"steps": 100_000})
    with TestClient(create_app(settings)) as client:
        alice = new_owner(client, "alice")
        emulator_id = client.post("/v1/emulators", json=LONG_STAGE1, headers=alice).json()["id"]

        worker = build_worker(settings, "w1")
        thread = run_in_thread(worker)
        wait_for(lambda: step_of(status(client, alice, emulator_id)["message"]) > 0)
        assert len(stage1_processes(settings.data_dir)) == 3  # torchrun's agent + 2 ranks
        worker.shutdown.set()  # SIGTERM: rank 0 checkpoints, the job goes back to the queue
        thread.join(60)
        assert not thread.is_alive()
        back = status(client, alice, emulator_id)
        assert back["state"] == "queued" and back["attempts"] == 0, back
        assert not stage1_processes(settings.data_dir)
        (partial,) = profiles_root().glob(".prof-*.partial")
        checkpoint_step = json.loads((partial / "state.json").read_text())["step"]
        assert checkpoint_step > 0

        worker = build_worker(settings, "w2")
        thread = run_in_thread(worker)
        wait_for(lambda: step_of(status(client, alice, emulator_id)["message"]) > 0)
        assert step_of(status(client, alice, emulator_id)["message"]) > checkpoint_step  # resumed, not restarted
        assert client.post(f"/v1/emulators/{emulator_id}/cancel", headers=alice).status_code == 202
        thread.join(60)
        assert not thread.is_alive()
        cancelled = status(client, alice, emulator_id)
        assert cancelled["state"] == "cancelled", cancelled
        assert not stage1_processes(settings.data_dir)  # no orphaned ranks


def test_batch_size_not_divisible_by_nproc_fails_the_job_clearly(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", stage1_nproc=2, stage1={"batch_size": 3})
    with TestClient(create_app(settings)) as client:
        alice = new_owner(client, "alice")
        emulator_id = client.post("/v1/emulators", json=LONG_STAGE1, headers=alice).json()["id"]
        build_worker(settings, "w").run_until_idle()
        failed = status(client, alice, emulator_id)
    assert failed["state"] == "failed"
    assert "stage-1 batch_size 3 is not divisible by 2 processes" in failed["error"]
    assert not stage1_processes(settings.data_dir)
