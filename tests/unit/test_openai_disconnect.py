"""A /openai/v1 generation ends soon after its client leaves, also while tokens keep arriving (a non-streamed
request on a fast model): the disconnect was checked only when no token came for DISCONNECT_POLL_S, so a
client that left went unnoticed until every token it asked for was made (seen on a real serve: 500 tokens
made after the client had gone; now cancelled after 4)."""

from __future__ import annotations

import asyncio

import pytest

from model_owner_server.app.api.routes import openai as route
from model_owner_server.app.services.completions import TextStream
from model_owner_server.serving.scheduler import GenRequest
from model_owner_server.serving.sinks import AsyncSink


class Letters:
    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "x" * len(ids)


class Gone:
    """A request whose client has disconnected."""

    async def is_disconnected(self) -> bool:
        return True


def test_a_client_that_left_ends_the_run_while_tokens_keep_coming(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(route, "DISCONNECT_POLL_S", 0.1)

    async def scenario() -> tuple[float, int, bool]:
        loop = asyncio.get_running_loop()
        run = route.Run.__new__(route.Run)  # the run's parts without a served model
        run.sink = AsyncSink(loop)
        run.job = GenRequest([1], None, 10**6, run.sink, frozenset())
        run.text = TextStream(Letters(), [])  # type: ignore[arg-type]
        run.prompt_tokens = 1

        async def scheduler() -> None:  # a token every 10 ms for 5 s, as a fast model makes them
            for _ in range(500):
                if run.job.cancelled.is_set():
                    return
                run.sink.token(7)
                await asyncio.sleep(0.01)
            run.sink.done("length", None)

        feeding = asyncio.create_task(scheduler())
        started = loop.time()
        received = [delta async for delta, _ in run.deltas(Gone())]  # type: ignore[arg-type]
        elapsed = loop.time() - started
        await feeding
        return elapsed, len(received), run.job.cancelled.is_set()

    elapsed, received, cancelled = asyncio.run(scenario())
    assert cancelled and elapsed < 1.0, (elapsed, received)
