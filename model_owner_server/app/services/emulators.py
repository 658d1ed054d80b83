"""Emulator requests: validate, derive the content id, and queue a build only when none exists.

The same parameters give the same id (the manifest's own id: base weights hash + spec + stage-1
profile id), so a repeated request, by the same or another data owner, attaches to the existing
emulator (queued, running or built) instead of building twice. A failed or cancelled build is
queued again when requested again.

Requests whose numbers differ but whose emulators would be the same (alpha 0.41 and 0.410000001 replace the
same blocks) have different ids, which cannot change; so each emulator also records its plan hash
(`emulators/plan_key.py`) and a request whose plan exists is answered by that emulator (`reused_equivalent`).
We reuse rather than refuse such alphas: any float is a valid request, and the caller gets what it asked for.
Queuing a build counts against the requester's quotas (`quotas.py`); attaching to an existing one does not.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from model_owner_server.app.core.security import Principal
from model_owner_server.app.core.state import AppState
from model_owner_server.app.services import quotas
from model_owner_server.app.services.access import visible_prompt_set
from model_owner_server.app.services.errors import Conflict, Unprocessable
from model_owner_server.app.services.ids import emulator_id, spec_stage1_config
from model_owner_server.app.services.prompt_sets import check_context_window
from model_owner_server.app.services.views import parse_manifest
from model_owner_server.base_models import BaseModelError, LoadedBase
from model_owner_server.db.models import FINISHED, Emulator, EmulatorGrant, Job, JobKind, JobState
from model_owner_server.emulators.plan_key import request_plan_sha256
from model_owner_server.emulators.spec import EmulatorSpec
from model_owner_server.emulators.stored import mark_damaged, stored_problems
from model_owner_server.jobs import queue
from model_owner_server.storage.keys import PROMPTS_FILE, prompt_set_prefix
from shared.data_formats import load_prompt_jsonl
from shared.scoring import max_length


def _calibration(session: Session, state: AppState, spec: EmulatorSpec, principal: Principal,
                 base: LoadedBase) -> EmulatorSpec:
    """The spec with the prompt set's hash and owner filled in (both part of the id); 404 for a prompt set the
    caller does not own, 422 for an emulator without harmonizers or prompts beyond the context window."""
    assert spec.calibration_prompts is not None
    if spec.method != "scaleot" or not spec.options.harmonizers or spec.alpha == 0:
        raise Unprocessable("calibration_prompts needs a scaleot emulator with harmonizers (alpha > 0): "
                            "calibration refines the harmonizers")
    prompt_set = visible_prompt_set(session, principal, spec.calibration_prompts)
    prompts = load_prompt_jsonl(state.store.local_dir(prompt_set_prefix(prompt_set.id)) / PROMPTS_FILE)
    check_context_window(prompts, base.tokenizer, max_length(base.model, base.tokenizer), prompt_set.id)
    return spec.model_copy(update={"calibration_sha256": prompt_set.sha256,
                                   "calibration_owner": principal.owner_id or "admin"})


@dataclass(frozen=True)
class Resolved:
    emulator_id: str
    stage1_json: str | None
    spec: EmulatorSpec  # as built (a calibrated one with its prompt set's hash and owner)
    plan_sha256: str | None  # None: not computable yet (a stage-1 profile not cached)


def resolve(state: AppState, spec: EmulatorSpec, session: Session | None = None,
            principal: Principal | None = None) -> Resolved:
    """What a request resolves to; raises 422/409/404 for requests that cannot be built."""
    served = state.settings.models
    if spec.base_model not in served:
        raise Unprocessable(f"base_model {spec.base_model!r} is not served here; choose one of {', '.join(served)}")
    try:
        base = state.base_models.get(spec.base_model)
    except BaseModelError as exc:
        raise Conflict(f"base model not available yet: {exc}. The model owner "
                       f"runs `scaleot-server models prepare {spec.base_model}`") from exc
    try:
        spec.check_against(base.num_layers)
        stage1 = spec_stage1_config(spec, state.settings.stage1)
    except ValueError as exc:
        raise Unprocessable(str(exc)) from exc
    if spec.calibration_prompts is not None:
        if session is None or principal is None:
            raise Unprocessable("a calibrated emulator is requested by a data owner through the service")
        spec = _calibration(session, state, spec, principal, base)
    return Resolved(emulator_id(spec, base, stage1), stage1.model_dump_json() if stage1 else None, spec,
                    request_plan_sha256(spec, base, stage1))


def _grant(session: Session, emulator_id: str, principal: Principal) -> None:
    if principal.owner_id and session.get(EmulatorGrant, (emulator_id, principal.owner_id)) is None:
        session.add(EmulatorGrant(emulator_id=emulator_id, owner_id=principal.owner_id))


def _cancelled(session: Session, row: Emulator) -> bool:
    job = session.get(Job, row.job_id) if row.job_id else None
    if job is not None:
        session.refresh(job)
    return job is not None and job.state == JobState.cancelled


def _damaged(session: Session, state: AppState, row: Emulator, job: Job) -> bool:
    """A built emulator whose stored files are missing or damaged: its build is marked failed (in the
    caller's transaction), so this request queues a rebuild instead of handing out a broken emulator."""
    if job.state != JobState.succeeded or row.manifest_json is None:
        return False
    problems = stored_problems(state.store, row.id, parse_manifest(row.manifest_json))
    return bool(problems) and mark_damaged(session.connection(), row.id, job.id, problems)


@dataclass(frozen=True)
class Requested:
    row: Emulator
    reused_equivalent: bool  # an existing emulator with the same plan answers a request with another id


def _equivalent(session: Session, plan: str | None) -> Emulator | None:
    if plan is None:
        return None
    return session.exec(select(Emulator).where(col(Emulator.plan_sha256) == plan).with_for_update()).first()


def _record_plan(session: Session, row: Emulator, plan: str | None) -> None:
    """An emulator known by id only (older than its plan hash, or requested before its profile was cached)
    learns its plan when requested again, unless another emulator already holds it."""
    if row.plan_sha256 is None and plan is not None and _equivalent(session, plan) is None:
        row.plan_sha256 = plan
        session.add(row)


def _queue_build(session: Session, state: AppState, eid: str, principal: Principal) -> Job:
    quotas.check_new_job(session, state.settings, principal, JobKind.emulator_build)  # 429 before anything
    return queue.enqueue(session, JobKind.emulator_build, eid, state.settings.max_attempts, principal.owner_id)


def request_emulator(session: Session, state: AppState, spec: EmulatorSpec, principal: Principal) -> Requested:
    resolved = resolve(state, spec, session, principal)
    spec, plan = resolved.spec, resolved.plan_sha256
    for _ in range(3):  # a concurrent identical (or equivalent) request may insert the row first: then attach
        row = session.get(Emulator, resolved.emulator_id, with_for_update=True)  # serialised with cancels
        reused = False
        if row is None:
            row = _equivalent(session, plan)
            reused = row is not None
        try:
            if row is None:
                job = _queue_build(session, state, resolved.emulator_id, principal)
                row = Emulator(id=resolved.emulator_id, base_model=spec.base_model, method=spec.method,
                               spec_json=spec.model_dump_json(), stage1_json=resolved.stage1_json, job_id=job.id,
                               plan_sha256=plan)
                session.add(job)
                session.flush()
                session.add(row)
            else:
                if not reused:
                    _record_plan(session, row, plan)
                job_row = session.get(Job, row.job_id) if row.job_id else None
                if job_row is not None and _damaged(session, state, row, job_row):
                    session.refresh(job_row)  # now failed: queued again below
                if job_row is None or job_row.state in (JobState.failed, JobState.cancelled):
                    job = _queue_build(session, state, row.id, principal)
                    session.flush()
                    row.job_id = job.id
                    session.add(row)
            session.flush()
            _grant(session, row.id, principal)
            session.commit()
            if not _cancelled(session, row):  # else the last other requester withdrew meanwhile: queue again
                return Requested(row, reused)
        except IntegrityError:  # the same id, or the same plan (unique), inserted meanwhile
            session.rollback()
    raise Conflict(f"emulator {resolved.emulator_id} is being requested concurrently; retry")


def _stop_build(session: Session, job_id: str) -> None:
    """In the caller's transaction: queued -> cancelled at once; running -> flagged (the worker stops at
    its next heartbeat). Conditional UPDATEs, like the queue's, so a worker's own change is never lost."""
    now = time.time()
    cancelled = session.exec(update(Job).where(col(Job.id) == job_id, col(Job.state) == JobState.queued).values(
        state=JobState.cancelled, finished_at=now, updated_at=now, message="cancelled before it started"))
    if not cancelled.rowcount:
        session.exec(update(Job).where(col(Job.id) == job_id, col(Job.state) == JobState.running).values(
            cancel_requested=True, updated_at=now, message="cancellation requested"))


def cancel_emulator(session: Session, row: Emulator, principal: Principal) -> bool:
    """Withdraw the caller's request. The build stops only when no other data owner still wants the
    emulator (the admin's cancel always stops it). Returns True when only the caller's request was
    withdrawn (its grant removed) and the build goes on for the others. 409 once the build finished."""
    session.exec(select(Emulator).where(col(Emulator.id) == row.id).with_for_update())  # serialise with requests
    job = session.get(Job, row.job_id) if row.job_id else None
    if job is None:
        raise Conflict(f"emulator {row.id} has no build to cancel")
    if job.state in FINISHED and job.state != JobState.cancelled:
        raise Conflict(f"the build of emulator {row.id} already {job.state}; nothing to cancel")
    others = 0
    if not principal.is_admin:
        others = len(session.exec(select(EmulatorGrant.owner_id).where(
            EmulatorGrant.emulator_id == row.id, EmulatorGrant.owner_id != principal.owner_id)).all())
    if others and job.state != JobState.cancelled:
        grant = session.get(EmulatorGrant, (row.id, principal.owner_id))
        if grant is not None:
            session.delete(grant)
    else:
        _stop_build(session, job.id)
    session.commit()
    return bool(others) and job.state != JobState.cancelled
