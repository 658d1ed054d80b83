"""More requests in flight than database connections and API threads: every request still succeeds.

A sync route used to keep its session's pooled connection until its answer had been serialised in a
second thread, so threads waiting for a connection could hold every thread the holders waited for;
requests then failed after the pool timeout (64 clients against 15 connections did, in `bench http`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from anyio import to_thread

from model_owner_server.app.main import create_app
from model_owner_server.db.engine import make_engine
from tests.service.conftest import ADMIN, make_settings

IN_FLIGHT = 24


def test_requests_beyond_the_pool_and_the_threads_all_succeed(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", api_threads=2)
    app = create_app(settings)
    state = app.state.scaleot
    state.engine.dispose()
    state.engine = make_engine(settings.db_url, pool_size=1, max_overflow=0, pool_timeout=5)

    async def load() -> list[int]:
        async with app.router.lifespan_context(app):
            assert to_thread.current_default_thread_limiter().total_tokens == 2  # SCALEOT_API_THREADS
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=ADMIN) as client:
                paths = ["/v1/adapters", "/v1/emulators", "/v1/evaluations"] * (IN_FLIGHT // 3)
                answers = await asyncio.wait_for(asyncio.gather(*(client.get(p) for p in paths)), 60)
        return [a.status_code for a in answers]

    try:
        assert asyncio.run(load()) == [200] * IN_FLIGHT
        assert state.engine.pool.checkedout() == 0  # every connection went back
    finally:
        state.engine.dispose()
