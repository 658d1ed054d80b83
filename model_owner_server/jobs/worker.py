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
from typing import TypeVar

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from model_owner_server.db.models import AgreementCheck, Evaluation, Job, JobState
from model_owner_server.db.outage import describe, is_transient, retry_transient
from model_owner_server.emulators.stage1 import Stage1Cancelled
from model_owner_server.jobs import queue
from model_owner_server.jobs.errors import public_error
from model_owner_server.model_cache import BaseModelCache
from model_owner_server.settings import Settings
from model_owner_server.storage.base import ArtifactStore

log = logging.getLogger("scaleot.worker")

T = TypeVar("T")


class JobCancelled(Exception):
    """Raised inside a job when it should stop (user cancellation or worker shutdown)."""


@dataclass
class WorkerServices:
    settings: Settings
    engine: Engine
    store: ArtifactStore
    base_models: BaseModelCache
    memo: dict[str, object] = field(default_factory=dict)  # e.g. full-model zero-shot scores per task

    def record_result(self, table: type[Evaluation] | type[AgreementCheck], row_id: str, result_json: str) -> None:
        """Store a finished evaluation's or agreement check's result on its row."""
        with Session(self.engine) as session:
            stored = session.get(table, row_id)
            assert stored is not None
            stored.result_json = result_json
            session.add(stored)
            session.commit()


@dataclass
class JobContext:
    job: Job
    engine: Engine
    worker_id: str
    cancel: threading.Event
    shutdown: threading.Event
    db_retry_s: float = 300.0  # SCALEOT_DB_RETRY_S
    _last_report: float = 0.0

    def should_stop(self) -> bool:
        return self.cancel.is_set() or self.shutdown.is_set()

    def db(self, action: Callable[[], T], what: str) -> T:
        """`action()` (a database read or write of the job), retried while the database is locked or
        unreachable, for at most SCALEOT_DB_RETRY_S; past that the transient error escapes and the worker
        gives the job back to the queue instead of failing it."""
        return retry_transient(action, budget_s=self.db_retry_s, what=f"job {self.job.id}: {what}",
                               stop=self.shutdown)

    def progress(self, fraction: float, message: str, force: bool = False) -> None:
        """Record progress (at most every 0.25 s) and stop here if the job should stop. A locked or
        unreachable database is waited for (`db`), not a reason to fail the job."""
        now = time.monotonic()
        if force or now - self._last_report > 0.25:
            self.db(lambda: queue.report(self.engine, self.job.id, self.worker_id, fraction, message),
                    "progress")
            self._last_report = time.monotonic()
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

    def _outcome(self, action: Callable[[], bool], job: Job, what: str) -> bool:
        """Record a job's outcome, retrying a database outage (SCALEOT_DB_RETRY_S). If the database stays
        away longer, the job is left running: its lease expires and the next claim requeues it."""
        try:
            return retry_transient(action, budget_s=self.services.settings.db_retry_s,
                                   what=f"job {job.id}: {what}")
        except SQLAlchemyError as exc:
            if not is_transient(exc):
                raise
            log.error("job %s: could not record %s (%s); its lease will expire and it will be requeued",
                      job.id, what, describe(exc))
            return False

    def _run(self, job: Job) -> None:
        engine, s = self.services.engine, self.services.settings
        ctx = JobContext(job, engine, self.worker_id, threading.Event(), self.shutdown, db_retry_s=s.db_retry_s)
        beating = threading.Event()

        def beat() -> None:
            wait = s.heartbeat_s
            while not beating.wait(wait):
                try:
                    owned, cancel = queue.heartbeat(engine, job.id, self.worker_id, s.lease_s)
                except SQLAlchemyError as exc:
                    # a locked or unreachable database must not end the heartbeat (the thread would die and
                    # the lease expire under a healthy job): try again soon, sooner than the usual beat
                    (log.warning if is_transient(exc) else log.error)(
                        "heartbeat of job %s failed (%s); retrying", job.id, describe(exc))
                    wait = min(s.heartbeat_s, 1.0)
                    continue
                wait = s.heartbeat_s
                if cancel or not owned:
                    ctx.cancel.set()

        thread = threading.Thread(target=beat, name=f"heartbeat-{job.id}", daemon=True)
        thread.start()
        log.info("job %s (%s %s) started, attempt %d on worker %s", job.id, job.kind, job.subject_id, job.attempts,
                 self.worker_id)
        outcome = "failed"
        try:
            message = self.handlers[job.kind](ctx, self.services)
            outcome = "succeeded" if self._outcome(
                lambda: queue.finish(engine, job.id, self.worker_id, JobState.succeeded, message), job, "success") \
                else "lost its lease"
        except (JobCancelled, Stage1Cancelled) as exc:
            if self.shutdown.is_set() and not ctx.cancel.is_set():
                self._outcome(lambda: queue.release(engine, job.id, self.worker_id, "requeued: worker shut down"),
                              job, "the release")
                outcome = "released"
            else:
                reason = f"cancelled ({exc})"
                self._outcome(lambda: queue.finish(engine, job.id, self.worker_id, JobState.cancelled, reason),
                              job, "the cancellation")
                outcome = "cancelled"
        except Exception as exc:
            if isinstance(exc, SQLAlchemyError) and is_transient(exc):
                # the database stayed away past SCALEOT_DB_RETRY_S: not the job's fault, so it is not failed
                # but given back to the queue (the attempt not counted) to run again once the database is back
                log.warning("job %s: database unavailable (%s); giving it back to the queue", job.id, describe(exc))
                self._outcome(lambda: queue.release(engine, job.id, self.worker_id,
                                                    "requeued: the database was unavailable"), job, "the release")
                outcome = "released (database unavailable)"
            else:  # the job failed: record why, keep the worker alive
                log.exception("job %s failed", job.id)  # the details stay here; the API shows a clean reason
                error = public_error(exc, job.id)
                self._outcome(lambda: queue.finish(engine, job.id, self.worker_id, JobState.failed, "failed", error),
                              job, "the failure")
        finally:
            beating.set()
            thread.join(timeout=5)
        # one line per attempt and outcome: the audit trail the multi-worker test reads
        log.info("job %s attempt %d %s on worker %s", job.id, job.attempts, outcome, self.worker_id)
