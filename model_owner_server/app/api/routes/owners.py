"""Admin: data owners and their API keys (keys are shown once, stored as sha256)."""

from __future__ import annotations

from fastapi import HTTPException, status
from sqlmodel import func, select

from model_owner_server.app.api.deps import AdminDep, SessionDep, StateDep
from model_owner_server.app.api.routing import api_router
from model_owner_server.app.services.owners import create_key, revoke_keys
from model_owner_server.db.models import ApiKey, Owner
from shared.api import OwnerCreate, OwnerKey, OwnerOut

router = api_router(prefix="/v1/owners", tags=["admin"])


@router.post("", response_model=OwnerKey, status_code=status.HTTP_201_CREATED,
             summary="Create a data owner with a first API key (admin)",
             responses={403: {"description": "not the admin key"}, 409: {"description": "name taken"}})
def create_owner(body: OwnerCreate, session: SessionDep, _: AdminDep) -> OwnerKey:
    if session.exec(select(Owner).where(Owner.name == body.name)).first() is not None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"data owner {body.name!r} exists; "
                            f"POST /v1/owners/{body.name}/keys adds a key")
    owner, key_id, key = create_key(session, body.name)
    return OwnerKey(owner_id=owner.id, name=owner.name, key_id=key_id, api_key=key)


@router.post("/{name}/keys", response_model=OwnerKey, status_code=status.HTTP_201_CREATED,
             summary="Add an API key for a data owner (admin)")
def add_key(name: str, session: SessionDep, _: AdminDep) -> OwnerKey:
    if session.exec(select(Owner).where(Owner.name == name)).first() is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"data owner {name!r} not found")
    owner, key_id, key = create_key(session, name)
    return OwnerKey(owner_id=owner.id, name=owner.name, key_id=key_id, api_key=key)


@router.post("/{name}/revoke", summary="Revoke every key of a data owner (admin)")
def revoke(name: str, session: SessionDep, state: StateDep, _: AdminDep) -> dict[str, int]:
    if session.exec(select(Owner).where(Owner.name == name)).first() is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"data owner {name!r} not found")
    revoked = revoke_keys(session, name)
    state.keys.clear()  # this process forgets them at once; others within SCALEOT_AUTH_CACHE_S
    return {"revoked": revoked}


@router.get("", response_model=list[OwnerOut], summary="Data owners (admin)")
def list_owners(session: SessionDep, _: AdminDep) -> list[OwnerOut]:
    counts = dict(session.exec(select(ApiKey.owner_id, func.count()).group_by(ApiKey.owner_id)).all())
    return [OwnerOut(id=o.id, name=o.name, created_at=o.created_at, keys=counts.get(o.id, 0))
            for o in session.exec(select(Owner).order_by(Owner.name)).all()]
