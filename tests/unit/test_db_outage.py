"""What counts as a transient database error, and the bounded retry of the worker (db/outage.py)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import exc, text

from model_owner_server.db.engine import make_engine
from model_owner_server.db.outage import describe, is_transient, retry_transient


def locked_error(tmp_path: Path) -> exc.OperationalError:
    """The real error of a write on a SQLite database another connection holds the write lock of."""
    path = tmp_path / "db.sqlite"
    engine = make_engine(f"sqlite:///{path}", busy_timeout_s=0.05)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (x INTEGER)"))
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(exc.OperationalError) as raised, engine.begin() as connection:
            connection.execute(text("INSERT INTO t VALUES (1)"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        engine.dispose()
    return raised.value


def test_a_locked_sqlite_database_is_transient_a_missing_table_is_not(tmp_path: Path) -> None:
    locked = locked_error(tmp_path)
    assert is_transient(locked)
    assert describe(locked) == "OperationalError: database is locked"  # no SQL statement
    engine = make_engine(f"sqlite:///{tmp_path / 'other.sqlite'}")
    with pytest.raises(exc.OperationalError) as missing, engine.connect() as connection:
        connection.execute(text("SELECT * FROM nowhere"))  # SQLite reports this as OperationalError too
    assert not is_transient(missing.value)
    with pytest.raises(exc.IntegrityError) as duplicate, engine.begin() as connection:
        connection.execute(text("CREATE TABLE u (x INTEGER PRIMARY KEY)"))
        connection.execute(text("INSERT INTO u VALUES (1), (1)"))
    assert not is_transient(duplicate.value)
    assert is_transient(exc.TimeoutError("QueuePool limit reached"))  # every pooled connection busy
    assert not is_transient(ValueError("not a database error"))


def test_a_lost_server_connection_is_transient() -> None:
    class ServerGone(Exception):  # what a driver raises when the server went away (module not sqlite3)
        pass

    assert is_transient(exc.OperationalError("SELECT 1", {}, ServerGone("server closed the connection")))
    assert is_transient(exc.InterfaceError("SELECT 1", {}, ServerGone("connection already closed")))
    invalidated = exc.DBAPIError("SELECT 1", {}, ServerGone("terminating connection"), connection_invalidated=True)
    assert is_transient(invalidated)
    assert not is_transient(exc.ProgrammingError("SELEC 1", {}, ServerGone("syntax error")))


def test_retry_transient_retries_until_it_works(tmp_path: Path) -> None:
    locked = locked_error(tmp_path)
    calls: list[float] = []

    def flaky() -> str:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise locked
        return "written"

    assert retry_transient(flaky, budget_s=10, what="test") == "written" and len(calls) == 3
    assert calls[2] - calls[1] > calls[1] - calls[0]  # backing off


def test_retry_transient_gives_up_after_its_budget_and_never_retries_other_errors(tmp_path: Path) -> None:
    locked = locked_error(tmp_path)
    calls = 0

    def always_locked() -> None:
        nonlocal calls
        calls += 1
        raise locked

    started = time.monotonic()
    with pytest.raises(exc.OperationalError):
        retry_transient(always_locked, budget_s=0.5, what="test")
    assert 0.3 < time.monotonic() - started < 2.0 and calls > 2

    calls = 0

    def broken() -> None:
        nonlocal calls
        calls += 1
        raise exc.ProgrammingError("SELEC 1", {}, Exception("syntax error"))

    with pytest.raises(exc.ProgrammingError):
        retry_transient(broken, budget_s=10, what="test")
    assert calls == 1
