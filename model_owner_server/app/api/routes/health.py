"""Liveness and readiness: no auth, touches the database."""

from __future__ import annotations

from fastapi import HTTPException, status
from sqlalchemy import text

from model_owner_server.app.api.deps import StateDep
from model_owner_server.app.api.routing import api_router
from shared.api import Health

router = api_router(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Service health (no auth)",
            responses={503: {"description": "database unavailable"}})
def healthz(state: StateDep) -> Health:
    try:
        with state.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"database unavailable: {exc}") from exc
    return Health(database=state.engine.dialect.name, schema_revision=state.schema_revision)
