"""Alembic environment: runs on the connection the caller passes (see `db/migrate.py`), or on the
URL from `SCALEOT_DATABASE_URL` / the settings when invoked as `alembic` directly."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import model_owner_server.db.models  # noqa: F401  (registers the tables on SQLModel.metadata)

target_metadata = SQLModel.metadata


def run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        from model_owner_server.db.engine import make_engine
        from model_owner_server.settings import get_settings

        engine = make_engine(get_settings().db_url)
        with engine.begin() as conn:
            context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
            with context.begin_transaction():
                context.run_migrations()
        return
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run()
