"""Per data owner quotas: queued/running jobs, emulator builds per 24 h, bytes stored. Past one, the
request is refused (429 with Retry-After) before anything is created. The admin key is exempt.

Each check runs in the caller's transaction, before its rows are added, and first locks the owner's row:
on PostgreSQL concurrent requests of one owner then check one after the other, so a quota is never
exceeded by a burst. SQLite has no row locks (its writes are serialised, but the counts are read before
the write lock is taken): there a burst of simultaneous requests can pass a quota by a few.
"""

from __future__ import annotations

import math
import time

from sqlalchemy import func
from sqlmodel import Session, col, select

from model_owner_server.app.core.security import Principal
from model_owner_server.app.services.errors import TooManyRequests
from model_owner_server.db.models import Adapter, AgreementCheck, Evaluation, Job, JobKind, JobState, Owner, PromptSet
from model_owner_server.settings import Settings

DAY_S = 86_400
# a queued or running job frees its slot when it finishes: minutes for most, so ask again soon
ACTIVE_RETRY_S = 30
# stored bytes are not freed by waiting (nothing is deleted automatically): an hour, not to be asked every second
STORED_RETRY_S = 3_600
MIB = 1024 * 1024


def _lock_owner(session: Session, owner_id: str) -> None:
    session.exec(select(Owner.id).where(col(Owner.id) == owner_id).with_for_update())


def _check_active(session: Session, settings: Settings, owner_id: str) -> None:
    limit = settings.quota_active_jobs
    if not limit:
        return
    active = session.exec(select(func.count()).select_from(Job).where(
        col(Job.owner_id) == owner_id, col(Job.state).in_([JobState.queued, JobState.running]))).one()
    if active >= limit:
        raise TooManyRequests(
            f"quota exceeded: SCALEOT_QUOTA_ACTIVE_JOBS = {limit} queued or running jobs per data owner, and you "
            f"have {active}; retry when one has finished (or cancel one)", ACTIVE_RETRY_S)


def _check_daily_builds(session: Session, settings: Settings, owner_id: str) -> None:
    limit = settings.quota_builds_per_day
    if not limit:
        return
    now = time.time()
    started = session.exec(select(Job.created_at).where(
        col(Job.owner_id) == owner_id, col(Job.kind) == JobKind.emulator_build, col(Job.created_at) > now - DAY_S)
        .order_by(col(Job.created_at))).all()
    if len(started) >= limit:
        # a build leaves the window 24 h after it was queued; one more may start when the first beyond the
        # limit's count has left it
        frees_at = started[len(started) - limit] + DAY_S
        raise TooManyRequests(
            f"quota exceeded: SCALEOT_QUOTA_BUILDS_PER_DAY = {limit} emulator builds per data owner in 24 hours, "
            f"and you started {len(started)}; an equivalent emulator that already exists is still answered",
            max(1, math.ceil(frees_at - now)))


def check_new_job(session: Session, settings: Settings, principal: Principal, kind: JobKind) -> None:
    """Before a request queues a job for a data owner: its active jobs (and, for a build, its builds today)."""
    if principal.is_admin or principal.owner_id is None:
        return
    _lock_owner(session, principal.owner_id)
    _check_active(session, settings, principal.owner_id)
    if kind == JobKind.emulator_build:
        _check_daily_builds(session, settings, principal.owner_id)


def stored_bytes(session: Session, owner_id: str) -> int:
    """What the owner keeps in the store: adapters, evaluation uploads, agreement-check prompts, prompt sets."""
    total = 0
    for table, column in ((Adapter, Adapter.size), (Evaluation, Evaluation.stored_bytes),
                          (AgreementCheck, AgreementCheck.stored_bytes), (PromptSet, PromptSet.stored_bytes)):
        total += session.exec(select(func.coalesce(func.sum(column), 0)).where(
            col(table.owner_id) == owner_id)).one()
    return int(total)


def check_storage(session: Session, settings: Settings, principal: Principal, adding: int) -> None:
    """Before a request stores `adding` more bytes for a data owner."""
    limit_mb = settings.quota_stored_mb
    if principal.is_admin or principal.owner_id is None or not limit_mb:
        return
    _lock_owner(session, principal.owner_id)
    used = stored_bytes(session, principal.owner_id)
    if used + adding > limit_mb * MIB:
        raise TooManyRequests(
            f"quota exceeded: SCALEOT_QUOTA_STORED_MB = {limit_mb} MiB stored per data owner (adapters, evaluation "
            f"uploads, prompt files); you store {used / MIB:.1f} MiB and this upload adds {adding / MIB:.1f} MiB. "
            "Stored files are not removed automatically: ask the model owner to raise the quota", STORED_RETRY_S)
