"""Where a request's tokens go as the scheduler thread produces them: a blocking sink for a caller on a
thread (REST generate, tests, benchmarks), an asyncio one for a streaming route (no thread held while
it waits, so hundreds of open streams cost no threads)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Literal, Protocol

FinishReason = Literal["stop", "length", "cancelled", "error"]


class Sink(Protocol):
    def token(self, token_id: int) -> None: ...

    def done(self, reason: FinishReason, error: Exception | None) -> None: ...


class BlockingSink:
    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.reason: FinishReason | None = None
        self.error: Exception | None = None
        self.started = time.perf_counter()
        self.first_token_s: float | None = None
        self._done = threading.Event()

    def token(self, token_id: int) -> None:
        if self.first_token_s is None:
            self.first_token_s = time.perf_counter() - self.started
        self.tokens.append(token_id)

    def done(self, reason: FinishReason, error: Exception | None) -> None:
        self.reason, self.error = reason, error
        self._done.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)


Event = tuple[Literal["token"], int] | tuple[Literal["done"], FinishReason, Exception | None]


class AsyncSink:
    """Hands events to an asyncio queue on the route's event loop (thread-safe)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.events: asyncio.Queue[Event] = asyncio.Queue()

    def _put(self, event: Event) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: the client and its route are gone
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)

    def token(self, token_id: int) -> None:
        self._put(("token", token_id))

    def done(self, reason: FinishReason, error: Exception | None) -> None:
        self._put(("done", reason, error))
