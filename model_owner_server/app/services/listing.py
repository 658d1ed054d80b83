"""Paginated, owner-scoped lists for the dashboard (the admin sees everything; a data owner the emulators it
requested and its own adapters and evaluations), built on the same views as the REST answers."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement
from sqlmodel import Session, col, func, select

from model_owner_server.app.core.security import Principal
from model_owner_server.app.services.views import adapter_out, emulator_out, evaluation_out
from model_owner_server.db.models import Adapter, ApiKey, Emulator, EmulatorGrant, Evaluation, Job, JobState, Owner
from model_owner_server.storage.base import ArtifactStore
from shared.api import AdapterOut, EmulatorOut, EvaluationOut

PAGE_SIZE = 50
T = TypeVar("T")


@dataclass
class Page(Generic[T]):
    items: list[T]
    total: int
    page: int  # from 1
    size: int = PAGE_SIZE

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.size))


@dataclass(frozen=True)
class OwnedRow(Generic[T]):
    item: T
    owner: str | None  # the data owner's name (None: the admin's, or not shown to a data owner)


def _offset(page: int) -> int:
    return (max(1, page) - 1) * PAGE_SIZE


def _owner_names(session: Session, ids: set[str]) -> dict[str, str]:
    if not ids:
        return {}
    return dict(session.exec(select(Owner.id, Owner.name).where(col(Owner.id).in_(ids))).all())


def _emulator_scope(principal: Principal) -> list[Any]:
    if principal.is_admin:
        return []
    granted = select(EmulatorGrant.emulator_id).where(col(EmulatorGrant.owner_id) == principal.owner_id)
    return [col(Emulator.id).in_(granted)]


def emulators_page(session: Session, store: ArtifactStore, principal: Principal, page: int = 1) -> Page[EmulatorOut]:
    where = _emulator_scope(principal)
    total = session.exec(select(func.count()).select_from(Emulator).where(*where)).one()
    rows = session.exec(select(Emulator, Job).outerjoin(Job, col(Job.id) == col(Emulator.job_id)).where(*where)
                        .order_by(col(Emulator.created_at).desc(), col(Emulator.id))
                        .limit(PAGE_SIZE).offset(_offset(page))).all()
    return Page([emulator_out(session, store, row, job) for row, job in rows], int(total), max(1, page))


def _owned_scope(model: type[Adapter] | type[Evaluation], principal: Principal) -> list[ColumnElement[bool]]:
    return [] if principal.is_admin else [col(model.owner_id) == principal.owner_id]


def adapters_page(session: Session, principal: Principal, page: int = 1,
                  emulator_id: str | None = None) -> Page[OwnedRow[AdapterOut]]:
    where = _owned_scope(Adapter, principal)
    if emulator_id is not None:
        where.append(col(Adapter.emulator_id) == emulator_id)
    total = session.exec(select(func.count()).select_from(Adapter).where(*where)).one()
    rows = session.exec(select(Adapter).where(*where).order_by(col(Adapter.created_at).desc(), col(Adapter.id))
                        .limit(PAGE_SIZE).offset(_offset(page))).all()
    names = _owner_names(session, {r.owner_id for r in rows if r.owner_id}) if principal.is_admin else {}
    return Page([OwnedRow(adapter_out(r), names.get(r.owner_id or "")) for r in rows], int(total), max(1, page))


def evaluations_page(session: Session, principal: Principal, page: int = 1, task: str | None = None,
                     succeeded_only: bool = False, adapter_id: str | None = None) -> Page[OwnedRow[EvaluationOut]]:
    where = _owned_scope(Evaluation, principal)
    if adapter_id is not None:
        where.append(col(Evaluation.adapter_id) == adapter_id)
    if task is not None:
        where.append(col(Evaluation.task) == task)
    if succeeded_only:
        where.append(col(Job.state) == JobState.succeeded)
    joined = col(Job.id) == col(Evaluation.job_id)
    counted = select(Evaluation.id).join(Job, joined) if succeeded_only else select(Evaluation.id)
    total = session.exec(select(func.count()).select_from(counted.where(*where).subquery())).one()
    # each row with its job in the same query (a query per row's status made the page 50 queries longer)
    rows = session.exec(select(Evaluation, Job).outerjoin(Job, joined).where(*where)
                        .order_by(col(Evaluation.created_at).desc(), col(Evaluation.id))
                        .limit(PAGE_SIZE).offset(_offset(page))).all()
    names = _owner_names(session, {r.owner_id for r, _ in rows if r.owner_id}) if principal.is_admin else {}
    return Page([OwnedRow(evaluation_out(session, r, job), names.get(r.owner_id or "")) for r, job in rows],
                int(total), max(1, page))


def counts(session: Session, principal: Principal) -> dict[str, int]:
    """How many emulators, adapters and evaluations the caller may see."""
    return {
        "emulators": int(session.exec(select(func.count()).select_from(Emulator)
                                      .where(*_emulator_scope(principal))).one()),
        "adapters": int(session.exec(select(func.count()).select_from(Adapter)
                                     .where(*_owned_scope(Adapter, principal))).one()),
        "evaluations": int(session.exec(select(func.count()).select_from(Evaluation)
                                        .where(*_owned_scope(Evaluation, principal))).one()),
    }


@dataclass(frozen=True)
class OwnerRow:
    id: str
    name: str
    created_at: float
    active_keys: int
    revoked_keys: int


def owners(session: Session) -> list[OwnerRow]:
    """Every data owner with its live and revoked key counts (admin)."""
    per_key_state = select(ApiKey.owner_id, ApiKey.revoked, func.count()).group_by(col(ApiKey.owner_id),
                                                                                    col(ApiKey.revoked))
    counts_of: dict[tuple[str, bool], int] = {
        (owner_id, bool(revoked)): int(n) for owner_id, revoked, n in session.exec(per_key_state).all()}
    return [OwnerRow(o.id, o.name, o.created_at, counts_of.get((o.id, False), 0), counts_of.get((o.id, True), 0))
            for o in session.exec(select(Owner).order_by(Owner.name)).all()]
