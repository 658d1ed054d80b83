"""Scoping: a data owner sees only the emulators it requested and its own adapters and evaluations.
Anything else is reported as 404 (not 403), so ids of other owners' objects are not confirmed."""

from __future__ import annotations

from fastapi import HTTPException, status
from sqlmodel import Session

from model_owner_server.app.api.deps import Principal
from model_owner_server.db.models import Adapter, Emulator, EmulatorGrant, Evaluation


def not_found(kind: str, object_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"{kind} {object_id} not found")


def can_see_emulator(session: Session, principal: Principal, emulator_id: str) -> bool:
    return principal.is_admin or session.get(EmulatorGrant, (emulator_id, principal.owner_id)) is not None


def visible_emulator(session: Session, principal: Principal, emulator_id: str) -> Emulator:
    row = session.get(Emulator, emulator_id)
    if row is None or not can_see_emulator(session, principal, emulator_id):
        raise not_found("emulator", emulator_id)
    return row


def visible_adapter(session: Session, principal: Principal, adapter_id: str) -> Adapter:
    row = session.get(Adapter, adapter_id)
    if row is None or not (principal.is_admin or row.owner_id == principal.owner_id):
        raise not_found("adapter", adapter_id)
    return row


def visible_evaluation(session: Session, principal: Principal, evaluation_id: str) -> Evaluation:
    row = session.get(Evaluation, evaluation_id)
    if row is None or not (principal.is_admin or row.owner_id == principal.owner_id):
        raise not_found("evaluation", evaluation_id)
    return row
