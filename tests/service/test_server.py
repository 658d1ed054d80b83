"""End to end against a real `scaleot-server serve` (uvicorn + a worker subprocess) on loopback:
keys from the CLI, an emulator built by the worker, 32 concurrent clients, a really trained adapter
uploaded, evaluated and generated with; a worker SIGKILLed mid-job (its job is recovered) and the
whole service restarted (jobs and data survive)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from data_owner_client.tuning.config import TuningConfig
from data_owner_client.tuning.local import train_adapter
from shared.data_formats import TrainExample
from tests.service.conftest import ADMIN_KEY, UNIFORM, auth, download, fresh_postgres_database, upload

CLI = [sys.executable, "-c", "from model_owner_server.cli import app; app()"]
SLOW = {"base_model": "tiny-llama", "method": "scaleot", "alpha": 0.5, "adapter_bottom": 1, "adapter_top": 1}
MC = [{"context": f"Q{i}: the sky is", "choices": [" blue", " green"], "label": 0} for i in range(4)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


class Server:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> httpx.Client:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([*CLI, "serve", "--port", str(port)], env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return httpx.Client(base_url=self.url, timeout=30)
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError(f"server did not start:\n{self.log.read_text()[-3000:]}")

    def worker_pids(self) -> list[int]:
        assert self.proc is not None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        return [int(pid) for pid in children]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            workers = self.worker_pids()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            deadline = time.monotonic() + 10
            while any(alive(pid) for pid in workers):  # serve stops its workers: no orphans
                assert time.monotonic() < deadline, f"workers {workers} outlived serve"
                time.sleep(0.1)


@pytest.fixture
def server_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCALEOT_") or k == "SCALEOT_CACHE_DIR"}
    env.update(SCALEOT_DATA_DIR=str(tmp_path / "data"), SCALEOT_ADMIN_KEY=ADMIN_KEY,
               SCALEOT_MODELS='["tiny-gpt2", "tiny-llama"]', SCALEOT_LEASE_S="2", SCALEOT_HEARTBEAT_S="0.3",
               SCALEOT_WORKER_POLL_S="0.2",
               SCALEOT_STAGE1='{"steps": 150, "batch_size": 2, "seq_len": 32, "harmonizer_rank": 8}',
               OMP_NUM_THREADS="1")
    database = fresh_postgres_database()  # the Postgres pass of .ci/run: restart survival on a real server
    if database:
        env["SCALEOT_DATABASE_URL"] = database
    return env


@pytest.fixture
def server(server_env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    running = Server(server_env, tmp_path / "server.log")
    yield running
    running.stop()


def wait_state(client: httpx.Client, url: str, headers: dict[str, str], states: set[str],
               timeout: float = 90, message: str = "") -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = client.get(url, headers=headers).json()
        if body["status"]["state"] in states and message in body["status"]["message"]:
            return body
        assert time.monotonic() < deadline, body["status"]
        time.sleep(0.2)


def test_full_flow_crash_recovery_and_restart(server: Server, server_env: dict[str, str], tmp_path: Path) -> None:
    created = subprocess.run([*CLI, "keys", "create", "--owner", "alice"], env=server_env, capture_output=True,
                             text=True, check=True)
    alice = auth(created.stdout.split()[-1])  # the key is the last word of the output
    client = server.start()
    assert client.get("/v1/models", headers=alice).status_code == 200

    emulator_id = client.post("/v1/emulators", json=UNIFORM, headers=alice).json()["id"]
    emulator = wait_state(client, f"/v1/emulators/{emulator_id}", alice, {"succeeded"})

    # 32 concurrent clients: status, listing and ranged downloads all consistent
    weights = next(f for f in emulator["files"] if f["name"] == "emulator.safetensors")
    whole = client.get(weights["url"], headers=alice).content

    def hit(i: int) -> bool:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            ok = c.get(f"/v1/emulators/{emulator_id}", headers=alice).json()["status"]["state"] == "succeeded"
            ok &= len(c.get("/v1/emulators", headers=alice).json()["items"]) == 1
            part = c.get(weights["url"], headers={**alice, "Range": f"bytes={i * 100}-{i * 100 + 99}"})
            return ok and part.status_code == 206 and part.content == whole[i * 100 : i * 100 + 100]

    with ThreadPoolExecutor(32) as pool:
        assert all(pool.map(hit, range(64)))

    # a really trained adapter: download, tune locally, upload, evaluate, generate
    emu_dir = download(client, alice, emulator, tmp_path / "emu")
    train = [TrainExample(context=f"item {i} is", target=" red") for i in range(16)]
    train_adapter(emu_dir, train, None, TuningConfig(epochs=1, lr=3e-3, batch_size=8, max_len=32), tmp_path / "ad")
    files = [(p.name, p.read_bytes()) for p in sorted((tmp_path / "ad").iterdir())]
    adapter = upload(client, alice, emulator_id, files)
    assert adapter.status_code == 201, adapter.text
    adapter_id = adapter.json()["id"]
    rows = "".join(json.dumps(r) + "\n" for r in MC).encode()
    evaluation = client.post("/v1/evaluations", data={"adapter_id": adapter_id}, files=[("file", ("mc.jsonl", rows))],
                             headers=alice).json()
    done = wait_state(client, f"/v1/evaluations/{evaluation['id']}", alice, {"succeeded"})
    assert done["result"]["adapter_changes_outputs"] is True
    generated = client.post(f"/v1/adapters/{adapter_id}/generate", json={"prompt": "item 3 is", "max_new_tokens": 4},
                            headers=alice)
    assert generated.status_code == 200 and generated.json()["new_tokens"] >= 1

    # the worker is SIGKILLed during stage 1: its lease expires and the job is run again to the end
    slow_id = client.post("/v1/emulators", json=SLOW, headers=alice).json()["id"]
    wait_state(client, f"/v1/emulators/{slow_id}", alice, {"running"}, message="stage 1 training step")
    for pid in server.worker_pids():
        os.kill(pid, signal.SIGKILL)
    recovered = wait_state(client, f"/v1/emulators/{slow_id}", alice, {"succeeded", "failed"}, timeout=120)
    assert recovered["status"]["state"] == "succeeded" and recovered["status"]["attempts"] == 2

    # restart the whole service with a job in flight: it is released, then finished by the new worker
    pending_id = client.post("/v1/emulators", json={**SLOW, "adapter_bottom": 2}, headers=alice).json()["id"]
    wait_state(client, f"/v1/emulators/{pending_id}", alice, {"running"})
    client.close()
    server.stop()
    client = server.start()
    assert client.get(f"/v1/adapters/{adapter_id}", headers=alice).status_code == 200  # data survived
    finished = wait_state(client, f"/v1/emulators/{pending_id}", alice, {"succeeded", "failed"}, timeout=120)
    assert finished["status"]["state"] == "succeeded", finished["status"]
    assert client.post("/v1/emulators", json=UNIFORM, headers=alice).json()["status"]["state"] == "succeeded"
    client.close()


# `SCALEOT_API_PROCESSES=2`: both API processes start and serve even when importing the app takes
# longer than uvicorn's default 5 s health-ping window (as it does on a busy 2-core machine), instead
# of being killed and respawned in a loop.
SLOW_CHILD_S = 8  # longer than uvicorn's default worker health-check timeout (5 s)

# Runs at interpreter start-up, before uvicorn's ping thread exists: it delays only the API children,
# which multiprocessing spawns with `spawn_main` on their command line.
SITECUSTOMIZE = f"""
import pathlib, time
if b"spawn_main" in pathlib.Path("/proc/self/cmdline").read_bytes():
    time.sleep({SLOW_CHILD_S})
"""


def test_two_slow_starting_api_processes_both_serve(server_env: dict[str, str], tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {**server_env, "SCALEOT_API_PROCESSES": "2", "PYTHONPATH": f"{site}:{server_env.get('PYTHONPATH', '')}"}
    server = Server(env, tmp_path / "server.log")
    started = time.monotonic()
    client = server.start()
    try:
        assert time.monotonic() - started >= SLOW_CHILD_S  # the children really were slow
        deadline = time.monotonic() + 60
        while server.log.read_text().count("Application startup complete") < 2:
            assert time.monotonic() < deadline, server.log.read_text()[-2000:]
            time.sleep(0.5)
        for _ in range(8):  # new connections, served by either process
            with httpx.Client(base_url=client.base_url, timeout=10) as fresh:
                assert fresh.get("/healthz").status_code == 200
        log = server.log.read_text()
        assert "died" not in log, log[-2000:]
        assert log.count("Started server process") == 2, log[-2000:]  # started once each, never respawned
    finally:
        client.close()
        server.stop()
