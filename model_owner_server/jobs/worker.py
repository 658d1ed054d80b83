"""The worker process: claim a job, run it with a heartbeat thread renewing its lease, record the outcome.

A user's cancellation (seen by the heartbeat) stops the job at its next progress check and marks it
cancelled. SIGTERM/SIGINT stops the current job the same way but puts it back in the queue (stage 1
resumes from its checkpoint), so restarting the service never loses or strands work. SIGKILL leaves
the lease to expire; the next claim by any worker recovers the job (`queue.recover_expired`).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from model_owner_server.db.models import Job, JobState
from model_owner_server.emulators.stage1 import Stage1Cancelled
from model_owner_server.jobs import queue
from model_owner_server.jobs.errors import public_error
from model_owner_server.model_cache import BaseModelCache
from model_owner_server.settings import Settings
from model_owner_server.storage.base import ArtifactStore

log = logging.getLogger("scaleot.worker")


class JobCancelled(Exception):
    """Raised inside a job when it should stop (user cancellation or worker shutdown)."""


@dataclass
class WorkerServices:
    settings: Settings
    engine: Engine
    store: ArtifactStore
    base_models: BaseModelCache
    memo: dict[str, object] = field(default_factory=dict)  # e.g. full-model zero-shot scores per task


@dataclass
class JobContext:
    job: Job
    engine: Engine
    worker_id: str
    cancel: threading.Event
    shutdown: threading.Event
    _last_report: float = 0.0

    def should_stop(self) -> bool:
        return self.cancel.is_set() or self.shutdown.is_set()

    def progress(self, fraction: float, message: str, force: bool = False) -> None:
        """Record progress (at most every 0.25 s) and stop here if the job should stop."""
        now = time.monotonic()
        if force or now - self._last_report > 0.25:
            queue.report(self.engine, self.job.id, self.worker_id, fraction, message)
            self._last_report = now
        if self.should_stop():
            raise JobCancelled(message)


Handler = Callable[[JobContext, WorkerServices], str]


class Worker:
    def __init__(self, services: WorkerServices, handlers: dict[str, Handler], worker_id: str | None = None) -> None:
        self.services = services
        self.handlers = handlers
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self.shutdown = threading.Event()

    def install_signal_handlers(self) -> None:
        def stop(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %s: finishing up and releasing the current job", signum)
            self.shutdown.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    def run_forever(self) -> None:
        settings = self.services.settings
        log.info("worker %s polling every %.1fs", self.worker_id, settings.worker_poll_s)
        while not self.shutdown.is_set():
            try:
                busy = self.run_once()
            except SQLAlchemyError as exc:  # database unreachable for a moment: back off, keep the worker
                log.warning("queue unavailable (%s); retrying", exc)
                busy = False
            if not busy:
                self.shutdown.wait(settings.worker_poll_s)

    def run_until_idle(self, max_jobs: int = 100) -> int:
        """Process jobs until the queue is empty (tests and one-shot use); returns how many ran."""
        done = 0
        while done < max_jobs and self.run_once():
            done += 1
        return done

    def run_once(self) -> bool:
        s = self.services.settings
        job = queue.claim(self.services.engine, self.worker_id, s.lease_s, tuple(self.handlers))
        if job is None:
            return False
        self._run(job)
        return True

    def _run(self, job: Job) -> None:
        engine, s = self.services.engine, self.services.settings
        ctx = JobContext(job, engine, self.worker_id, threading.Event(), self.shutdown)
        beating = threading.Event()

        def beat() -> None:
            while not beating.wait(s.heartbeat_s):
                owned, cancel = queue.heartbeat(engine, job.id, self.worker_id, s.lease_s)
                if cancel or not owned:
                    ctx.cancel.set()

        thread = threading.Thread(target=beat, name=f"heartbeat-{job.id}", daemon=True)
        thread.start()
        log.info("job %s (%s %s) started, attempt %d on worker %s", job.id, job.kind, job.subject_id, job.attempts,
                 self.worker_id)
        outcome = "failed"
        try:
            message = self.handlers[job.kind](ctx, self.services)
            outcome = "succeeded" if queue.finish(engine, job.id, self.worker_id, JobState.succeeded, message) \
                else "lost its lease"
        except (JobCancelled, Stage1Cancelled) as exc:
            if self.shutdown.is_set() and not ctx.cancel.is_set():
                queue.release(engine, job.id, self.worker_id, "requeued: worker shut down")
                outcome = "released"
            else:
                queue.finish(engine, job.id, self.worker_id, JobState.cancelled, f"cancelled ({exc})")
                outcome = "cancelled"
        except Exception as exc:  # the job failed: record why, keep the worker alive
            log.exception("job %s failed", job.id)  # the details stay here; the API shows a clean reason
            queue.finish(engine, job.id, self.worker_id, JobState.failed, "failed", public_error(exc, job.id))
        finally:
            beating.set()
            thread.join(timeout=5)
        # one line per attempt and outcome: the audit trail the multi-worker test reads
        log.info("job %s attempt %d %s on worker %s", job.id, job.attempts, outcome, self.worker_id)
