"""Jobs as their callers may see them: the admin sees every job; a data owner the builds of the
emulators it requested and the jobs of its own evaluations and agreement checks (anything else is
reported as not found, as in `access.py`). Lists are paginated and filtered in the database."""

from __future__ import annotations

import re
import time
from typing import Any

from sqlalchemy import ColumnElement, and_, false, func, or_
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from model_owner_server.app.core.security import Principal
from model_owner_server.app.services.access import not_found
from model_owner_server.app.services.errors import Conflict, Unprocessable
from model_owner_server.db.models import (
    FINISHED,
    AgreementCheck,
    EmulatorGrant,
    Evaluation,
    Job,
    JobKind,
    JobState,
)
from model_owner_server.jobs import queue
from shared.api_jobs import MAX_PAGE, JobList, JobOut, QueueSummary

RECENT_FAILURES = 5
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")  # the shape of every id (access.py): anything else is no job


def _visible(principal: Principal) -> ColumnElement[bool] | None:
    """The WHERE clause of the jobs a data owner may see; None for the admin (every job)."""
    if principal.is_admin:
        return None
    if principal.owner_id is None:
        return false()
    owner = principal.owner_id
    granted = select(EmulatorGrant.emulator_id).where(col(EmulatorGrant.owner_id) == owner)
    evaluations = select(Evaluation.id).where(col(Evaluation.owner_id) == owner)
    checks = select(AgreementCheck.id).where(col(AgreementCheck.owner_id) == owner)
    return or_(
        and_(col(Job.kind) == JobKind.emulator_build, col(Job.subject_id).in_(granted)),
        and_(col(Job.kind) == JobKind.evaluation, col(Job.subject_id).in_(evaluations)),
        and_(col(Job.kind) == JobKind.agreement_check, col(Job.subject_id).in_(checks)),
    )


def job_out(job: Job, now: float | None = None) -> JobOut:
    now = time.time() if now is None else now
    queued_s = job.started_at - job.created_at if job.started_at is not None else None
    run_s = None
    if job.started_at is not None:
        end = job.finished_at if job.finished_at is not None else (now if job.state == JobState.running else None)
        run_s = max(0.0, end - job.started_at) if end is not None else None
    return JobOut(id=job.id, kind=job.kind, subject_id=job.subject_id, state=JobState(job.state),
                  progress=job.progress, message=job.message, error=job.error, attempts=job.attempts,
                  max_attempts=job.max_attempts, cancel_requested=job.cancel_requested,
                  worker=job.lease_owner if job.state == JobState.running else None,
                  lease_expires_at=job.lease_expires_at if job.state == JobState.running else None,
                  created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
                  updated_at=job.updated_at, queued_s=queued_s, run_s=run_s)


def check_filters(state: str | None, kind: str | None) -> None:
    if state is not None and state not in set(JobState):
        raise Unprocessable(f"state {state[:40]!r} is not a job state; one of {', '.join(JobState)}")
    if kind is not None and kind not in set(JobKind):
        raise Unprocessable(f"kind {kind[:40]!r} is not a job kind; one of {', '.join(JobKind)}")


def list_jobs(session: Session, principal: Principal, state: str | None = None, kind: str | None = None,
              limit: int = 50, offset: int = 0) -> JobList:
    """One page of the caller's jobs, newest first, with the count over every page."""
    check_filters(state, kind)
    limit = max(1, min(limit, MAX_PAGE))
    offset = max(0, offset)
    where: list[ColumnElement[bool]] = []
    visible = _visible(principal)
    if visible is not None:
        where.append(visible)
    if state is not None:
        where.append(col(Job.state) == state)
    if kind is not None:
        where.append(col(Job.kind) == kind)
    total = session.exec(select(func.count()).select_from(Job).where(*where)).one()
    rows = session.exec(select(Job).where(*where).order_by(col(Job.created_at).desc(), col(Job.id))
                        .limit(limit).offset(offset)).all()
    now = time.time()
    return JobList(items=[job_out(row, now) for row in rows], total=int(total), limit=limit, offset=offset)


def visible_job(session: Session, principal: Principal, job_id: str) -> Job:
    """A job the caller may see; anyone else's is reported as not found."""
    job = session.get(Job, job_id) if _ID.fullmatch(job_id) else None
    if job is None:
        raise not_found("job", job_id)
    visible = _visible(principal)
    if visible is not None and session.exec(select(Job.id).where(col(Job.id) == job_id, visible)).first() is None:
        raise not_found("job", job_id)
    return job


def cancel(session: Session, engine: Engine, principal: Principal, job_id: str) -> JobOut:
    """The model owner stops a job: queued -> cancelled at once, running -> flagged (its worker stops at the
    next check). 409 once it finished. (A data owner withdraws its own requests through their routes.)"""
    job = visible_job(session, principal, job_id)
    if job.state in FINISHED:
        raise Conflict(f"job {job.id} already {job.state}; nothing to cancel")
    try:
        queue.request_cancel(engine, job.id)
    except ValueError as exc:
        raise Conflict(str(exc)) from exc
    session.expire_all()
    refreshed = session.get(Job, job.id)
    assert refreshed is not None
    return job_out(refreshed)


def summary(session: Session, principal: Principal) -> QueueSummary:
    """Counts per state, the workers holding leases, the latest failures (all within the caller's jobs)."""
    visible = _visible(principal)
    where: list[Any] = [visible] if visible is not None else []
    counts = dict(session.exec(select(Job.state, func.count()).where(*where).group_by(Job.state)).all())
    now = time.time()
    workers = session.exec(select(Job.lease_owner).distinct().where(
        *where, col(Job.state) == JobState.running, col(Job.lease_expires_at) > now)).all()
    failed = session.exec(select(Job).where(*where, col(Job.state) == JobState.failed)
                          .order_by(col(Job.finished_at).desc()).limit(RECENT_FAILURES)).all()
    return QueueSummary(by_state={s.value: int(counts.get(s.value, 0)) for s in JobState},
                        workers_alive=sorted(w for w in workers if w),
                        recent_failures=[job_out(job, now) for job in failed])
