"""The probe pool on its own (issue 27 item 3): at most `concurrency` calls run at once, `queue` more wait,
the next is refused at once with a Retry-After estimate; a place is given back when its call ends, also
when the request that waited for it went away; probe threads run torch on one core, the caller keeps its
threads."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch

from model_owner_server.app.core.probe_pool import ProbePool, ProbesBusy


def test_bounded_with_a_queue_and_refusal() -> None:
    pool = ProbePool(concurrency=1, queue=1)
    gate = threading.Event()

    async def scenario() -> list[int]:
        first = asyncio.ensure_future(pool.run(lambda: gate.wait(10) and 1))
        second = asyncio.ensure_future(pool.run(lambda: 2))
        await asyncio.sleep(0.1)
        assert pool.admitted == 2
        with pytest.raises(ProbesBusy) as info:
            await pool.run(lambda: 3)
        assert info.value.retry_after_s >= 1
        gate.set()
        return [await first, await second]

    assert asyncio.run(scenario()) == [1, 2]
    assert pool.admitted == 0 and pool.peak_running == 1
    pool.shutdown()


def test_a_cancelled_wait_gives_its_place_back() -> None:
    pool = ProbePool(concurrency=1, queue=1)
    gate = threading.Event()

    async def scenario() -> None:
        running = asyncio.ensure_future(pool.run(lambda: gate.wait(10)))
        waiting = asyncio.ensure_future(pool.run(lambda: None))
        await asyncio.sleep(0.1)
        waiting.cancel()  # the client went away before its probe started
        await asyncio.sleep(0.1)
        assert pool.admitted == 1
        gate.set()
        await running

    asyncio.run(scenario())
    assert pool.admitted == 0
    pool.shutdown()


def test_probe_threads_use_one_torch_thread() -> None:
    if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        pytest.skip("torch's thread count is per thread only under OpenMP")
    before = torch.get_num_threads()
    pool = ProbePool(concurrency=1, queue=0)
    assert asyncio.run(pool.run(torch.get_num_threads)) == 1
    assert torch.get_num_threads() == before
    pool.shutdown()
