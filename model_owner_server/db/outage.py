"""Transient database errors: what counts as one, and a bounded retry for the worker.

A database that is locked past its busy timeout (SQLite: another connection holds the write lock) or
unreachable for a moment (PostgreSQL: a restart, `pg_terminate_backend`, a failover) is not a reason to
fail a job or answer 500: the API answers 503 with `Retry-After` (`app/main.py`), and the worker retries
its writes with backoff for a bounded time (`retry_transient`), so a job fails only for its own reasons.

Not transient: SQL errors, constraint violations, a missing table. SQLite reports some of those as
`OperationalError` too ("no such table", syntax errors), so for SQLite only the lock/busy messages count.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import exc

log = logging.getLogger("scaleot.db")

T = TypeVar("T")

RETRY_AFTER_S = 5  # what a 503 tells the client to wait; a lock or a restart usually clears in seconds
_SQLITE_TRANSIENT = ("database is locked", "database table is locked", "database is busy")
_FIRST_DELAY_S = 0.05
_MAX_DELAY_S = 5.0


def _is_sqlite(error: exc.DBAPIError) -> bool:
    return type(error.orig).__module__.split(".")[0] == "sqlite3"


def is_transient(error: BaseException) -> bool:
    """True for an error that waiting may cure: locked/busy SQLite, a lost or refused server connection,
    an exhausted pool, a serialisation failure (PostgreSQL reports all of those as OperationalError)."""
    if isinstance(error, (exc.TimeoutError, exc.DisconnectionError)):  # pool exhausted / connection dropped
        return True
    if not isinstance(error, exc.DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    if _is_sqlite(error):
        message = str(error.orig).lower()
        return isinstance(error, exc.OperationalError) and any(text in message for text in _SQLITE_TRANSIENT)
    return isinstance(error, (exc.OperationalError, exc.InterfaceError))


def describe(error: BaseException) -> str:
    """A one-line reason without the SQL statement or its parameters (they go to the server log only)."""
    if isinstance(error, exc.DBAPIError) and error.orig is not None:
        first = str(error.orig).strip().splitlines()
        return f"{type(error.orig).__name__}: {first[0][:200] if first else ''}".rstrip(": ")
    return type(error).__name__


def retry_transient(action: Callable[[], T], *, budget_s: float, what: str,
                    stop: threading.Event | None = None) -> T:
    """`action()`, again with exponential backoff (0.05 s doubling to 5 s) while it raises a transient
    database error, for at most `budget_s` seconds in all (the attempts' own waiting, e.g. SQLite's busy
    timeout, included); then the last error is raised. `stop` set (worker shutdown) ends the waiting early."""
    deadline = time.monotonic() + budget_s
    delay = _FIRST_DELAY_S
    attempt = 1
    while True:
        try:
            return action()
        except exc.SQLAlchemyError as error:
            if not is_transient(error) or time.monotonic() + delay > deadline or (stop is not None and stop.is_set()):
                raise
            log.warning("%s: database unavailable (%s); attempt %d failed, retrying in %.2fs", what,
                        describe(error), attempt, delay)
        if stop is not None:
            stop.wait(delay)
        else:
            time.sleep(delay)
        delay = min(delay * 2, _MAX_DELAY_S)
        attempt += 1


def unavailable_detail(error: BaseException) -> str:
    """The API's 503 message: what happened and what to do, never the SQL (that goes to the server log)."""
    return (f"the database is busy or unreachable right now ({type(error).__name__}); the request was not "
            f"completed: retry in {RETRY_AFTER_S} s")
