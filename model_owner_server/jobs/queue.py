"""The job queue in the database: enqueue, claim with a lease, heartbeat, finish, recover, cancel.

Every state change is one conditional UPDATE (`... WHERE state = 'queued'`, `... AND lease_owner =
me`), so two workers never run the same job and a worker that lost its lease cannot overwrite the
job's outcome. A running job whose lease expired (its worker crashed or was killed) is put back in
the queue until `max_attempts` runs were started, then failed with the reason: never left running.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence

from sqlalchemy import ColumnElement, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from model_owner_server.db.models import FINISHED, Job, JobState


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(8)}"


def enqueue(session: Session, kind: str, subject_id: str, max_attempts: int, owner_id: str | None = None) -> Job:
    """`owner_id`: the data owner whose request queued it (what the per-owner quotas count)."""
    job = Job(id=new_id("job"), kind=kind, subject_id=subject_id, max_attempts=max_attempts, message="queued",
              owner_id=owner_id)
    session.add(job)
    return job


def _set(engine: Engine, job_id: str, where: Sequence[ColumnElement[bool]], **values: object) -> bool:
    """One conditional UPDATE; True when it matched the row (the caller's precondition held)."""
    values.setdefault("updated_at", time.time())
    with engine.begin() as conn:
        result = conn.execute(update(Job).where(col(Job.id) == job_id, *where).values(**values))
        return bool(result.rowcount)


def recover_expired(engine: Engine) -> list[str]:
    """Requeue (or fail, after max_attempts) running jobs whose worker stopped heartbeating."""
    now = time.time()
    with Session(engine) as session:
        stale = session.exec(
            select(Job).where(Job.state == JobState.running, col(Job.lease_expires_at) < now)
        ).all()
    touched: list[str] = []
    for job in stale:
        guard = [col(Job.state) == JobState.running, col(Job.lease_expires_at) == job.lease_expires_at]
        lost = f"worker {job.lease_owner} stopped heartbeating during attempt {job.attempts} of {job.max_attempts}"
        if job.cancel_requested:
            done = _set(engine, job.id, guard, state=JobState.cancelled, finished_at=now, lease_owner=None,
                        message="cancelled", error=None)
        elif job.attempts >= job.max_attempts:
            done = _set(engine, job.id, guard, state=JobState.failed, finished_at=now, lease_owner=None,
                        message="failed", error=f"{lost} (crashed or killed); no attempts left, request it again")
        else:
            done = _set(engine, job.id, guard, state=JobState.queued, lease_owner=None, lease_expires_at=None,
                        progress=0.0, message=f"requeued: {lost}")
        if done:
            touched.append(job.id)
    return touched


def claim(engine: Engine, worker_id: str, lease_s: float, kinds: tuple[str, ...] | None = None) -> Job | None:
    """Take the oldest queued job (after recovering orphaned ones), or None."""
    recover_expired(engine)
    with Session(engine) as session:
        query = select(Job).where(Job.state == JobState.queued).order_by(col(Job.created_at)).limit(8)
        if kinds:
            query = query.where(col(Job.kind).in_(kinds))
        candidates = [(j.id, j.attempts, j.max_attempts)
                      for j in session.exec(query.with_for_update(skip_locked=True)).all()]
    for job_id, attempts, max_attempts in candidates:
        now = time.time()
        if _set(engine, job_id, [col(Job.state) == JobState.queued], state=JobState.running,
                lease_owner=worker_id, lease_expires_at=now + lease_s, attempts=attempts + 1,
                started_at=now, message=f"running (attempt {attempts + 1} of {max_attempts})", error=None):
            with Session(engine) as session:
                return session.get(Job, job_id)
    return None


def heartbeat(engine: Engine, job_id: str, worker_id: str, lease_s: float) -> tuple[bool, bool]:
    """Renew the lease; returns (still ours, cancellation requested)."""
    owned = _set(engine, job_id, [col(Job.lease_owner) == worker_id, col(Job.state) == JobState.running],
                 lease_expires_at=time.time() + lease_s)
    with Session(engine) as session:
        job = session.get(Job, job_id)
        return owned, bool(job is not None and job.cancel_requested)


def report(engine: Engine, job_id: str, worker_id: str, progress: float, message: str) -> bool:
    return _set(engine, job_id, [col(Job.lease_owner) == worker_id, col(Job.state) == JobState.running],
                progress=max(0.0, min(1.0, progress)), message=message[:500])


def finish(engine: Engine, job_id: str, worker_id: str, state: JobState, message: str,
           error: str | None = None) -> bool:
    values: dict[str, object] = {"state": state, "message": message[:500], "error": error and error[:4000],
                                 "finished_at": time.time(), "lease_owner": None, "lease_expires_at": None}
    if state == JobState.succeeded:
        values["progress"] = 1.0
    return _set(engine, job_id, [col(Job.lease_owner) == worker_id, col(Job.state) == JobState.running], **values)


def request_cancel(engine: Engine, job_id: str) -> Job:
    """Queued -> cancelled at once; running -> flagged (the worker stops at its next check).
    Raises ValueError for a job that already finished."""
    now = time.time()
    if not _set(engine, job_id, [col(Job.state) == JobState.queued], state=JobState.cancelled,
                finished_at=now, message="cancelled before it started"):
        _set(engine, job_id, [col(Job.state) == JobState.running], cancel_requested=True,
             message="cancellation requested")
    with Session(engine) as session:
        job = session.get(Job, job_id)
    if job is None:
        raise KeyError(job_id)
    if job.state in FINISHED and job.state != JobState.cancelled:
        raise ValueError(f"job {job_id} already {job.state}; nothing to cancel")
    return job


def release(engine: Engine, job_id: str, worker_id: str, message: str) -> bool:
    """Give a running job back to the queue without counting the attempt (clean worker shutdown)."""
    with Session(engine) as session:
        job = session.get(Job, job_id)
        attempts = max(0, (job.attempts if job else 1) - 1)
    return _set(engine, job_id, [col(Job.lease_owner) == worker_id, col(Job.state) == JobState.running],
                state=JobState.queued, lease_owner=None, lease_expires_at=None, attempts=attempts,
                progress=0.0, message=message)
