"""More requests in flight than database connections and API threads: every request still succeeds.

A sync route used to keep its session's pooled connection until its answer had been serialised in a
second thread, so threads waiting for a connection could hold every thread the holders waited for;
requests then failed after the pool timeout (64 clients against 15 connections did, in `bench http`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from anyio import to_thread

from model_owner_server.app.main import create_app
from model_owner_server.db.engine import make_engine
from tests.service.conftest import ADMIN, make_settings

IN_FLIGHT = 24


def test_requests_beyond_the_pool_and_the_threads_all_succeed(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", api_threads=2, generation_concurrency=1)
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


def test_generations_cannot_take_every_api_thread(tmp_path: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"SCALEOT_GENERATION_CONCURRENCY .* must be below SCALEOT_API_THREADS"):
        make_settings(tmp_path / "data", api_threads=2, generation_concurrency=2)


def test_waiting_generations_hold_no_thread_so_status_reads_go_on(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Generations beyond SCALEOT_GENERATION_CONCURRENCY wait without a thread: with 2 API threads and 1
    generation slot, reads are answered while three slow generations queue."""
    import threading
    import time

    from sqlmodel import Session

    from model_owner_server.app.api.routes import generate as route
    from model_owner_server.db.models import Adapter, Emulator
    from shared.api import GenerateOut

    running: list[int] = []
    peak: list[int] = [0]
    lock = threading.Lock()

    def slow_generate(state: object, adapter: Adapter, emulator: Emulator, request: object) -> GenerateOut:
        with lock:
            running.append(1)
            peak[0] = max(peak[0], len(running))
        time.sleep(0.4)
        with lock:
            running.pop()
        return GenerateOut(adapter_id=adapter.id, prompt="p", completion="c", new_tokens=1, seconds=0.4,
                           cached_model=True)

    monkeypatch.setattr(route, "generate", slow_generate)
    settings = make_settings(tmp_path / "data", api_threads=2, generation_concurrency=1)
    app = create_app(settings)
    with Session(app.state.scaleot.engine) as session:
        session.add(Emulator(id="emu-x", base_model="tiny-llama", method="uniform", spec_json="{}", manifest_json="{}"))
        session.commit()  # the adapter's foreign key needs the emulator first
        session.add(Adapter(id="ada-x", emulator_id="emu-x", kind="full", files_json="{}"))
        session.commit()

    async def load() -> tuple[list[int], list[float], float]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=ADMIN) as client:
                started = time.perf_counter()
                body = {"prompt": "p", "max_new_tokens": 1}
                generations = [asyncio.create_task(client.post("/v1/adapters/ada-x/generate", json=body))
                               for _ in range(3)]
                await asyncio.sleep(0.1)
                read_times = []
                for _ in range(5):
                    assert (await client.get("/v1/adapters/ada-x")).status_code == 200
                    read_times.append(time.perf_counter() - started)
                codes = [g.status_code for g in await asyncio.gather(*generations)]
                return codes, read_times, time.perf_counter() - started

    codes, read_times, total = asyncio.run(load())
    assert codes == [200, 200, 200] and peak[0] == 1  # one generation at a time
    assert total >= 1.2 and max(read_times) < 0.8  # the reads did not wait for the queued generations
