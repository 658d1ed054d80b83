"""Pooled server connections are pinged only after sitting idle, and a dead one is replaced before use.

`pool_pre_ping` pinged on every checkout: one extra round trip per API request on PostgreSQL."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine

from model_owner_server.db.engine import ping_when_idle
from tests.service.conftest import fresh_postgres_database


def _counting(engine: Engine, monkeypatch: pytest.MonkeyPatch, fail: int = 0) -> dict[str, int]:
    counts = {"pings": 0, "connects": 0, "fail": fail}
    real = engine.dialect.do_ping

    def do_ping(dbapi_connection: Any) -> bool:
        counts["pings"] += 1
        if counts["fail"]:
            counts["fail"] -= 1
            raise OSError("server closed the connection unexpectedly")
        return real(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", do_ping)

    @event.listens_for(engine, "connect")
    def _connected(*_: Any) -> None:
        counts["connects"] += 1

    return counts


def _query(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT 1")).scalar_one())


def test_a_busy_pool_does_not_ping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}", pool_size=1, max_overflow=0)
    ping_when_idle(engine, idle_s=60)
    counts = _counting(engine, monkeypatch)
    assert [_query(engine) for _ in range(10)] == [1] * 10
    assert counts == {"pings": 0, "connects": 1, "fail": 0}


def test_an_idle_connection_is_pinged_and_a_dead_one_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}", pool_size=1, max_overflow=0)
    ping_when_idle(engine, idle_s=0)  # every reuse counts as idle
    counts = _counting(engine, monkeypatch)
    assert _query(engine) == 1 and counts["pings"] == 0  # a new connection needs no ping
    assert _query(engine) == 1 and counts == {"pings": 1, "connects": 1, "fail": 0}
    counts["fail"] = 1  # the next ping finds the connection dead: it is discarded and a new one used
    assert _query(engine) == 1
    assert counts["connects"] == 2 and counts["fail"] == 0


@pytest.mark.skipif(not os.environ.get("SCALEOT_TEST_POSTGRES_URL"), reason="needs SCALEOT_TEST_POSTGRES_URL")
def test_a_terminated_postgres_backend_is_replaced() -> None:
    url = fresh_postgres_database()
    assert url is not None
    engine = create_engine(url, pool_size=1, max_overflow=0)  # as make_engine builds it, with no idle wait
    ping_when_idle(engine, idle_s=0)
    with engine.connect() as connection:
        pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:  # as a server restart or an idle timeout would
        assert connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()
    with engine.connect() as connection:
        assert connection.execute(text("SELECT pg_backend_pid()")).scalar_one() != pid
    admin.dispose()
    engine.dispose()
