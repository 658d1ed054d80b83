"""Emulator requests: validate, derive the content id, and queue a build only when none exists.

The same parameters give the same id (the manifest's own id: base weights hash + spec + stage-1
profile id), so a repeated request, by the same or another data owner, attaches to the existing
emulator (queued, running or built) instead of building twice. A failed or cancelled build is
queued again when requested again.
"""

from __future__ import annotations

from fastapi import HTTPException, status
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from model_owner_server.app.api.deps import Principal
from model_owner_server.app.core.state import AppState
from model_owner_server.app.services.ids import emulator_id, stage1_config
from model_owner_server.base_models import BaseModelError
from model_owner_server.db.models import Emulator, EmulatorGrant, Job, JobKind, JobState
from model_owner_server.emulators.spec import EmulatorSpec
from model_owner_server.jobs import queue


def resolve(state: AppState, spec: EmulatorSpec) -> tuple[str, str | None]:
    """(emulator id, stage-1 config JSON or None); raises 422/409 for requests that cannot be built."""
    served = state.settings.models
    if spec.base_model not in served:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            f"base_model {spec.base_model!r} is not served here; choose one of {', '.join(served)}")
    try:
        base = state.base_models.get(spec.base_model)
    except BaseModelError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, f"base model not available yet: {exc}. The model owner "
                            f"runs `scaleot-server models prepare {spec.base_model}`") from exc
    try:
        spec.check_against(base.num_layers)
        stage1 = stage1_config(spec, state.settings.stage1_overrides())
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    return emulator_id(spec, base, stage1), stage1.model_dump_json() if stage1 else None


def _grant(session: Session, emulator_id: str, principal: Principal) -> None:
    if principal.owner_id and session.get(EmulatorGrant, (emulator_id, principal.owner_id)) is None:
        session.add(EmulatorGrant(emulator_id=emulator_id, owner_id=principal.owner_id))


def request_emulator(session: Session, state: AppState, spec: EmulatorSpec, principal: Principal) -> Emulator:
    eid, stage1_json = resolve(state, spec)
    for _ in range(3):  # a concurrent identical request may insert the row first: then attach to it
        row = session.get(Emulator, eid)
        try:
            if row is None:
                job = queue.enqueue(session, JobKind.emulator_build, eid, state.settings.max_attempts)
                row = Emulator(id=eid, base_model=spec.base_model, method=spec.method,
                               spec_json=spec.model_dump_json(), stage1_json=stage1_json, job_id=job.id)
                session.add(job)
                session.flush()
                session.add(row)
            else:
                job_row = session.get(Job, row.job_id) if row.job_id else None
                if job_row is None or job_row.state in (JobState.failed, JobState.cancelled):
                    job = queue.enqueue(session, JobKind.emulator_build, eid, state.settings.max_attempts)
                    session.flush()
                    row.job_id = job.id
                    session.add(row)
            session.flush()
            _grant(session, eid, principal)
            session.commit()
            return row
        except IntegrityError:
            session.rollback()
    raise HTTPException(status.HTTP_409_CONFLICT, f"emulator {eid} is being requested concurrently; retry")


def cancel_emulator(state: AppState, row: Emulator) -> None:
    if row.job_id is None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"emulator {row.id} has no build to cancel")
    try:
        queue.request_cancel(state.engine, row.job_id)
    except ValueError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
