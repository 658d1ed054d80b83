"""Dependencies as `Annotated` aliases: the app state, a DB session, and who is calling.

Authentication: `Authorization: Bearer <key>`. The admin key comes from settings; data-owner keys
are looked up by their public id and their sha256 compared in constant time. Missing or wrong
key -> 401; a data owner on an admin route -> 403.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from functools import lru_cache
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine
from sqlmodel import Session

from model_owner_server.app.core.security import Principal, hash_key, key_id_of, same_secret
from model_owner_server.app.core.state import AppState
from model_owner_server.db.models import ApiKey


async def get_state(request: Request) -> AppState:  # async: no thread-pool hop for a field read
    state: AppState = request.app.state.scaleot
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_session(state: StateDep) -> AsyncIterator[Session]:
    # async: opening a Session does no I/O (a connection is taken on first use, in the sync route)
    with Session(state.engine, expire_on_commit=False) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


@lru_cache(maxsize=8)
def _autocommit(engine: Engine) -> Engine:
    """`engine` (its pool) in autocommit, derived once per engine instead of on every status read."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")


async def get_read_session(state: StateDep) -> AsyncIterator[Session]:
    """For routes that only read: each statement in autocommit, so a status poll is one round trip to the
    database instead of BEGIN + SELECT + ROLLBACK (PostgreSQL; SQLite the same, without the journal lock)."""
    with Session(_autocommit(state.engine), expire_on_commit=False) as session:
        yield session


ReadSessionDep = Annotated[Session, Depends(get_read_session)]

bearer = HTTPBearer(auto_error=False, description="the admin key, or a data owner's key from `keys create`")


def _unauthorized(reason: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, reason, headers={"WWW-Authenticate": "Bearer"})


def bearer_token(authorization: str | None) -> str | None:
    """The key of an `Authorization: Bearer <key>` header (scheme case-insensitive), else None."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def remembered(state: AppState, presented: str | None) -> Principal | None:
    """The caller, when this key was accepted in the last few seconds (no I/O: the event loop may call it)."""
    return state.keys.get(hash_key(presented)) if presented else None


def authenticate(state: AppState, presented: str | None) -> Principal:
    """Who holds this key; raises 401. Opens its own session (the request guard calls it before the
    route, and so before any request body is read)."""
    if not presented:
        raise _unauthorized("missing API key: send `Authorization: Bearer <key>`")
    digest = hash_key(presented)
    if same_secret(digest, hash_key(state.settings.admin_key)):
        return Principal("admin")
    key_id = key_id_of(presented)
    # the cache entry's TTL runs from before the read: a revocation committed after this moment is
    # seen by every check that starts after it, and outlived by this entry for at most the TTL
    checked_at = time.monotonic()
    with Session(state.engine) as session:
        row = session.get(ApiKey, key_id) if key_id else None
    # compare even when the id is unknown, so timing does not reveal which ids exist
    valid = same_secret(digest, row.key_hash if row else "0" * 64)
    if row is None or row.revoked or not valid:
        raise _unauthorized("invalid API key: ask the model owner for a key (`scaleot-server keys create`)")
    principal = Principal("owner", owner_id=row.owner_id)
    state.keys.put(digest, principal, checked_at)
    return principal


PRINCIPAL_KEY = "scaleot_principal"  # where the request guard leaves the caller in `request.state`


async def get_principal(
    request: Request, state: StateDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    known = getattr(request.state, PRINCIPAL_KEY, None)
    if isinstance(known, Principal):  # the request guard authenticated the caller already
        return known
    presented = credentials.credentials if credentials else None
    principal = remembered(state, presented)
    if principal is None:
        principal = await run_in_threadpool(authenticate, state, presented)
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require_admin(principal: PrincipalDep) -> Principal:
    if not principal.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this route needs the model owner's admin key")
    return principal


AdminDep = Annotated[Principal, Depends(require_admin)]
