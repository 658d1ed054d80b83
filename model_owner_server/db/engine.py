"""The SQLAlchemy engine for SQLite (WAL, busy timeout, foreign keys) or Postgres, from one URL."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.engine import Engine, make_url
from sqlmodel import create_engine


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


IDLE_PING_S = 5.0  # a pooled server connection idle longer than this is pinged before it is handed out


def ping_when_idle(engine: Engine, idle_s: float = IDLE_PING_S) -> None:
    """Ping a pooled connection on checkout only when it sat idle for `idle_s`, instead of on every checkout
    (`pool_pre_ping`), which doubled the round trips of a busy API (one `SELECT 1` per request). A dead
    connection (server restarted, idle timeout) is replaced before use either way: a failed ping raises
    `DisconnectionError`, on which the pool discards it and connects again. The price: a connection that
    dies while the API is busy (a database restart under load) is not pinged, so the first request on it
    fails; SQLAlchemy then discards the whole pool, so about one request per API process fails, where
    `pool_pre_ping` would have caught every dead connection."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("checked_in")
        if since is None or time.monotonic() - since < idle_s:  # new, or used a moment ago
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:  # any driver error: this connection is not usable
            raise exc.DisconnectionError(f"stale pooled connection: {error}") from error


DEFAULT_BUSY_TIMEOUT_S = 30.0


def make_engine(url: str, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S, **pool: Any) -> Engine:
    """`pool`: QueuePool sizes (pool_size, max_overflow, pool_timeout) when the defaults (5 + 10, 30 s) do not fit.
    `busy_timeout_s` (SQLite): how long a write waits for another connection's write lock before it raises
    `database is locked` (a transient error: `db.outage`)."""
    if not is_sqlite(url):
        engine = create_engine(url, **pool)
        ping_when_idle(engine)
        return engine
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": busy_timeout_s}, **pool)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer (API + worker)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine
