"""`scaleot-server serve`: uvicorn with the app factory, plus worker subprocesses supervised beside it.

A worker that exits unexpectedly is restarted (after a short back-off); on shutdown the workers get
SIGTERM, which puts their current job back in the queue, and are killed if they do not exit in time.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import signal
import subprocess
import sys
import threading
import time

import uvicorn
from fastapi import FastAPI

from model_owner_server.app.bounded_http import BoundedHttpToolsProtocol
from model_owner_server.app.main import create_app
from model_owner_server.db.engine import make_engine
from model_owner_server.db.migrate import upgrade
from model_owner_server.settings import Settings

log = logging.getLogger("scaleot.serve")
WORKER_CMD = [sys.executable, "-m", "model_owner_server.jobs"]
# With SCALEOT_API_PROCESSES > 1, uvicorn kills a child that does not answer its health ping in time
# (5 s by default) and starts another. A child answers only once it has imported the app (torch,
# transformers): 5-15 s on a busy 2-core machine, so children were killed and respawned in a loop.
# The same timeout bounds how long a hung child goes unnoticed (uvicorn then kills and replaces it).
API_CHILD_HEALTHCHECK_S = 120


def _die_with_parent() -> None:
    """Linux: the worker gets SIGTERM if `serve` dies, even by SIGKILL (no orphaned workers)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def spawn_worker() -> subprocess.Popen[bytes]:
    return subprocess.Popen(WORKER_CMD, preexec_fn=_die_with_parent)


class WorkerSupervisor:
    def __init__(self, count: int) -> None:
        self.count = count
        self.procs: list[subprocess.Popen[bytes]] = []
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)

    def start(self) -> None:
        self.procs = [spawn_worker() for _ in range(self.count)]
        log.info("started %d worker(s): pids %s", self.count, [p.pid for p in self.procs])
        self._thread.start()

    def _watch(self) -> None:
        while not self.stopping.wait(2.0):
            for i, proc in enumerate(self.procs):
                if proc.poll() is not None and not self.stopping.is_set():
                    log.warning("worker pid %d exited with %s; restarting", proc.pid, proc.returncode)
                    time.sleep(1.0)
                    self.procs[i] = spawn_worker()

    def stop(self, timeout: float = 30.0) -> None:
        self.stopping.set()
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def serving_app() -> FastAPI:
    """The app for a long-running API process. Once it is built, everything allocated so far (torch,
    transformers, the app) is moved out of the garbage collector's reach (`gc.freeze`): a full
    collection otherwise walks those millions of objects, about 260 ms on this machine, and every
    request in flight waits for it (the p99 of `bench http`)."""
    app = create_app()
    gc.freeze()
    return app


def serve(settings: Settings, host: str, port: int, workers: int | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(make_engine(settings.db_url))  # once, before API and workers race for it
    supervisor = WorkerSupervisor(settings.workers_with_serve if workers is None else workers)
    supervisor.start()

    def exit_on(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    # uvicorn restores these handlers after its graceful shutdown and re-raises the signal it caught:
    # with Python handlers (instead of the default, which kills at once) the `finally` below runs.
    signal.signal(signal.SIGTERM, exit_on)
    signal.signal(signal.SIGINT, exit_on)
    try:
        uvicorn.run("model_owner_server.app.serve:serving_app", factory=True, host=host, port=port,
                    workers=settings.api_processes, timeout_worker_healthcheck=API_CHILD_HEALTHCHECK_S,
                    http=BoundedHttpToolsProtocol)  # bounded request heads: no proxy in front of it
    finally:
        supervisor.stop()
