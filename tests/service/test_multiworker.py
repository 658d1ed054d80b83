"""Several worker processes on one queue: N emulator jobs across 3 real `scaleot-server worker` processes,
every job completed exactly once, and a worker SIGKILLed mid-job whose job another worker finishes.

Runs on the test database: Postgres when SCALEOT_TEST_POSTGRES_URL is set (`.ci/run` starts one), SQLite
otherwise. The proof of "exactly once" is the workers' own audit lines (one per attempt and outcome),
read from all three logs, checked against the jobs' rows."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, select

from model_owner_server.app.main import create_app
from model_owner_server.db.engine import make_engine
from model_owner_server.db.models import Job
from tests.service.conftest import ADMIN_KEY, make_settings, new_owner

WORKER = [sys.executable, "-c", "from model_owner_server.cli import app; app()", "worker", "--threads", "1"]
BASES = ["tiny-llama", "tiny-gpt2", "tiny-qwen2", "tiny-opt"]
AUDIT = re.compile(r"job (\S+) attempt (\d+) (succeeded|failed|cancelled|released|lost its lease) on worker (\S+)")
STARTED = re.compile(r"job (\S+) \(\S+ \S+\) started, attempt (\d+) on worker (\S+)")


def specs() -> list[dict[str, object]]:
    """12 distinct emulators: per base model one scaleot build (stage 1 runs: the long jobs) and two uniform."""
    out: list[dict[str, object]] = []
    for base in BASES:
        common = {"base_model": base, "adapter_bottom": 1, "adapter_top": 1}
        out += [{**common, "method": "scaleot", "alpha": 0.5},
                {**common, "method": "uniform", "alpha": 0.5, "beta": 0.0},
                {**common, "method": "uniform", "alpha": 0.25, "beta": 0.5}]
    return out


def jobs(engine: Engine) -> list[Job]:
    with Session(engine) as session:
        return list(session.exec(select(Job)).all())


def test_three_workers_run_every_job_exactly_once_and_recover_a_killed_one(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", models=BASES, stage1={"steps": 150})
    backend = make_url(settings.db_url).get_backend_name()
    print(f"multi-worker test on {backend}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCALEOT_") or k == "SCALEOT_CACHE_DIR"}
    env.update(SCALEOT_DATA_DIR=str(settings.data_dir), SCALEOT_DATABASE_URL=settings.db_url,
               SCALEOT_ADMIN_KEY=ADMIN_KEY, SCALEOT_MODELS='["' + '", "'.join(BASES) + '"]',
               SCALEOT_LEASE_S="4", SCALEOT_HEARTBEAT_S="0.4", SCALEOT_WORKER_POLL_S="0.2",
               SCALEOT_STAGE1='{"steps": 150, "batch_size": 2, "seq_len": 32, "harmonizer_rank": 8}',
               OMP_NUM_THREADS="1")
    with TestClient(create_app(settings)) as client:
        alice = new_owner(client, "alice")
        ids = []
        for spec in specs():
            response = client.post("/v1/emulators", json=spec, headers=alice)
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
    assert len(set(ids)) == len(ids) == 12

    engine = make_engine(settings.db_url)  # the test's own view of the job rows
    logs = [tmp_path / f"worker-{i}.log" for i in range(3)]
    procs = []
    for log in logs:
        with log.open("wb") as out:
            procs.append(subprocess.Popen(WORKER, env=env, stdout=out, stderr=subprocess.STDOUT))
    try:
        # kill the worker running a scaleot build in the middle of stage 1 (checkpoints every 20 steps)
        deadline = time.monotonic() + 240
        victim: Job | None = None
        while victim is None:
            assert time.monotonic() < deadline, [(j.state, j.message) for j in jobs(engine)]
            running = [j for j in jobs(engine) if j.state == "running" and "stage 1 training step" in j.message]
            victim = next((j for j in running if 0.3 < j.progress < 0.7 and j.lease_owner), None)
            time.sleep(0.1)
        assert victim.lease_owner is not None
        killed_pid = int(victim.lease_owner.split(":")[1])
        killed = next(p for p in procs if p.pid == killed_pid)
        killed.send_signal(signal.SIGKILL)
        killed.wait(10)

        deadline = time.monotonic() + 300
        while not all(j.state in ("succeeded", "failed", "cancelled") for j in jobs(engine)):
            assert time.monotonic() < deadline, [(j.id, j.state, j.message) for j in jobs(engine)]
            time.sleep(0.3)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()

    rows = {j.id: j for j in jobs(engine)}
    engine.dispose()
    assert len(rows) == 12
    assert {j.state for j in rows.values()} == {"succeeded"}, {j.id: (j.state, j.error) for j in rows.values()}
    text = "\n".join(log.read_text(errors="replace") for log in logs)
    outcomes = [m.groups() for m in AUDIT.finditer(text)]
    starts = [m.groups() for m in STARTED.finditer(text)]
    succeeded = Counter(job_id for job_id, _, outcome, _ in outcomes if outcome == "succeeded")
    assert succeeded == Counter({job_id: 1 for job_id in rows}), text[-4000:]  # every job done exactly once
    assert all(outcome == "succeeded" for _, _, outcome, _ in outcomes), outcomes
    # every attempt a worker started is in the job's count; only the killed job needed a second one
    assert Counter(job_id for job_id, _, _ in starts) == Counter({j.id: j.attempts for j in rows.values()})
    assert {j.id: j.attempts for j in rows.values() if j.attempts != 1} == {victim.id: 2}
    first, second = sorted((int(a), w) for job_id, a, w in starts if job_id == victim.id)
    assert first[1] == victim.lease_owner and second[1] != victim.lease_owner
    workers_used = {w for _, _, _, w in outcomes}
    assert len(workers_used) >= 2, workers_used  # the work was shared, not run by one process
