"""The schema is owned by Alembic revisions: a fresh database is upgraded to head at start-up, the
revisions match the SQLModel tables exactly, and downgrade/upgrade round-trips."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlmodel import SQLModel

import model_owner_server.db.models  # noqa: F401
from model_owner_server.db.engine import make_engine
from model_owner_server.db.migrate import alembic_config, current_revision, head_revision, upgrade


def test_fresh_database_is_migrated_and_matches_the_models(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    assert current_revision(engine) is None
    assert upgrade(engine) == head_revision() == "0001"
    assert upgrade(engine) == "0001"  # idempotent: a second process finds it done
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        diff = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    assert diff == [], f"models and migrations differ; add a revision: {diff}"
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), "base")
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    assert upgrade(engine) == "0001"
    assert {"owner", "api_key", "job", "emulator", "emulator_grant", "adapter", "evaluation"} <= set(
        inspect(engine).get_table_names())
