"""Apply the Alembic revisions (`migrations/versions`) up to head; run at every start-up.

Several processes start at once (API, worker): SQLite serialises them with a file lock beside the
database, Postgres with an advisory lock, so only one upgrades and the others find it done.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine, make_url

from model_owner_server.db.engine import is_sqlite

MIGRATIONS = Path(__file__).with_name("migrations")
_PG_LOCK_ID = 7_240_411  # arbitrary, fixed: the advisory lock id of schema upgrades


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def upgrade(engine: Engine) -> str | None:
    """Bring the schema to the newest revision; returns it."""
    url = str(engine.url)
    if is_sqlite(url):
        database = make_url(url).database
        lock = Path(database + ".migrate.lock") if database and database != ":memory:" else None
        if lock is None:
            with engine.begin() as connection:
                command.upgrade(alembic_config(connection), "head")
        else:
            with _file_lock(lock), engine.begin() as connection:
                command.upgrade(alembic_config(connection), "head")
    else:
        with engine.begin() as connection:
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_LOCK_ID})
            command.upgrade(alembic_config(connection), "head")
    return current_revision(engine)
