"""Data owners and their API keys (used by the admin route and `scaleot-server keys create`)."""

from __future__ import annotations

from sqlmodel import Session, select

from model_owner_server.app.core.security import new_api_key
from model_owner_server.db.models import ApiKey, Owner
from model_owner_server.jobs.queue import new_id


def create_key(session: Session, name: str) -> tuple[Owner, str, str]:
    """A new key for the owner `name` (created if missing): (owner, key id, full key shown once)."""
    owner = session.exec(select(Owner).where(Owner.name == name)).first()
    if owner is None:
        owner = Owner(id=new_id("own"), name=name)
        session.add(owner)
        session.flush()
    key_id, key, digest = new_api_key()
    session.add(ApiKey(id=key_id, owner_id=owner.id, key_hash=digest))
    session.commit()
    session.refresh(owner)
    return owner, key_id, key


def revoke_keys(session: Session, name: str) -> int:
    owner = session.exec(select(Owner).where(Owner.name == name)).first()
    if owner is None:
        return 0
    keys = session.exec(select(ApiKey).where(ApiKey.owner_id == owner.id, ApiKey.revoked == False)).all()  # noqa: E712
    for key in keys:
        key.revoked = True
        session.add(key)
    session.commit()
    return len(keys)
