"""Scoping: a data owner sees only the emulators it requested and its own adapters and evaluations.
Anything else is reported as 404 (not 403), so ids of other owners' objects are not confirmed."""

from __future__ import annotations

import re
from typing import TypeVar

from sqlalchemy import bindparam
from sqlmodel import Session, col, select

from model_owner_server.app.core.security import Principal
from model_owner_server.app.services.errors import Conflict, Gone, NotFound
from model_owner_server.db.models import (
    Adapter,
    AgreementCheck,
    Emulator,
    EmulatorGrant,
    Evaluation,
    Job,
    JobState,
    PromptSet,
)
from model_owner_server.emulators.stored import damaged_error, stored_problems, try_mark_damaged
from model_owner_server.storage.base import ArtifactStore
from shared.manifest import EmulatorManifest

T = TypeVar("T", Emulator, Adapter, Evaluation, AgreementCheck, PromptSet)
Owned = TypeVar("Owned", Adapter, Evaluation, AgreementCheck, PromptSet)


# the shape of every id the service hands out (`emu-<hex>`, `ada-<hex>`, ...); anything else cannot exist,
# and is answered without a query (Postgres rejects NUL bytes in text: that would be a 500)
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")


def not_found(kind: str, object_id: str) -> NotFound:
    shown = object_id if _ID.fullmatch(object_id) else repr(object_id[:60])
    return NotFound(f"{kind} {shown} not found")


def _lookup(session: Session, model: type[T], kind: str, object_id: str) -> T:
    row = session.get(model, object_id) if _ID.fullmatch(object_id) else None
    if row is None:
        raise not_found(kind, object_id)
    return row


def _owned(session: Session, principal: Principal, model: type[Owned], kind: str, object_id: str) -> Owned:
    """A row its data owner (or the admin) may see; anyone else's is reported as not found."""
    row = _lookup(session, model, kind, object_id)
    if not (principal.is_admin or row.owner_id == principal.owner_id):
        raise not_found(kind, object_id)
    return row


def visible_emulator(session: Session, principal: Principal, emulator_id: str) -> Emulator:
    return visible_emulator_and_job(session, principal, emulator_id)[0]


# Built once with bound parameters: constructing the expressions (`col(...) == value`, joins) on every
# request cost about as much Python as running the cached, compiled statement (status polling is the hot path).
_EMULATOR_AND_JOB = (select(Emulator, Job).outerjoin(Job, col(Job.id) == col(Emulator.job_id))
                     .where(col(Emulator.id) == bindparam("emulator_id")))
_GRANTED_EMULATOR_AND_JOB = _EMULATOR_AND_JOB.join(
    EmulatorGrant, (col(EmulatorGrant.emulator_id) == col(Emulator.id))
    & (col(EmulatorGrant.owner_id) == bindparam("owner_id")))


def visible_emulator_and_job(session: Session, principal: Principal, emulator_id: str
                             ) -> tuple[Emulator, Job | None]:
    """One query for the emulator, the caller's grant and the build job (status polling is the hot path)."""
    if not _ID.fullmatch(emulator_id):
        raise not_found("emulator", emulator_id)
    if principal.is_admin:
        found = session.exec(_EMULATOR_AND_JOB, params={"emulator_id": emulator_id}).first()
    else:
        found = session.exec(_GRANTED_EMULATOR_AND_JOB,
                             params={"emulator_id": emulator_id, "owner_id": principal.owner_id}).first()
    if found is None:
        raise not_found("emulator", emulator_id)
    return found[0], found[1]


def built_emulator(session: Session, principal: Principal, emulator_id: str, then: str,
                   store: ArtifactStore | None = None) -> Emulator:
    """A visible emulator whose build succeeded; Conflict (409) naming what to do (`then`) otherwise. With
    `store`, its stored files are checked too: missing or damaged ones mark it for rebuild and answer Gone
    (410) saying to request it again."""
    emulator, job = visible_emulator_and_job(session, principal, emulator_id)
    if emulator.manifest_json is None or job is None or job.state != JobState.succeeded:
        raise Conflict(f"emulator {emulator_id} is not built yet; {then} once its build has succeeded")
    if store is not None:
        problems = stored_problems(store, emulator.id, EmulatorManifest.model_validate_json(emulator.manifest_json))
        if problems:
            try_mark_damaged(session.get_bind(), emulator.id, job.id, problems)
            raise Gone(f"{damaged_error(emulator.id, problems)}; then {then}")
    return emulator


def visible_adapter(session: Session, principal: Principal, adapter_id: str) -> Adapter:
    return _owned(session, principal, Adapter, "adapter", adapter_id)


def visible_evaluation(session: Session, principal: Principal, evaluation_id: str) -> Evaluation:
    return _owned(session, principal, Evaluation, "evaluation", evaluation_id)


def visible_agreement(session: Session, principal: Principal, check_id: str) -> AgreementCheck:
    return _owned(session, principal, AgreementCheck, "agreement check", check_id)


def visible_prompt_set(session: Session, principal: Principal, set_id: str) -> PromptSet:
    """Only the owner who uploaded a prompt set sees it (the admin too)."""
    return _owned(session, principal, PromptSet, "prompt set", set_id)
