"""Where adapter upload probes run: a few probe threads of their own, with a bounded queue.

A probe runs the full model (seconds on a real one). Run on API threads without a limit, 16 concurrent
SmolLM2 uploads took every API thread and all cores, and `/healthz` waited up to 7.8 s (issue 27
item 3). Here at most `concurrency` probes run at once, each on a probe thread; an upload waiting
for one holds no API thread (the request awaits a future), and once `concurrency + queue` uploads are
in, the next one is refused at once (`ProbesBusy`: 503 with Retry-After) rather than piling up.

A probe thread runs torch on one core. A probe is ten forwards of one short text each: too small for
intra-op threads to pay off, and on a busy machine their spinning barriers made a SmolLM2 probe take
11-15 s instead of 1.6 s (2 cores, measured). Under OpenMP (the Linux builds) the setting is per
thread, so generation and evaluation keep theirs; elsewhere it would be global, so it is left alone.
"""

from __future__ import annotations

import asyncio
import functools
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import ParamSpec, TypeVar

import torch

P = ParamSpec("P")
T = TypeVar("T")


PROBE_TORCH_THREADS = 1


def _one_torch_thread() -> None:
    if "parallel backend: OpenMP" in torch.__config__.parallel_info():
        torch.set_num_threads(PROBE_TORCH_THREADS)


class ProbesBusy(Exception):
    """Every probe slot and every queue place is taken; `retry_after_s` estimates when one is free."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"every adapter probe slot is taken; retry in about {retry_after_s} s")
        self.retry_after_s = retry_after_s


class ProbePool:
    def __init__(self, concurrency: int, queue: int) -> None:
        self.concurrency = concurrency
        self.capacity = concurrency + queue
        self._executor = ThreadPoolExecutor(concurrency, thread_name_prefix="scaleot-probe",
                                            initializer=_one_torch_thread)
        self._lock = threading.Lock()
        self._admitted = 0  # running or queued; released when the work ends, even if its request went away
        self._running = 0
        self.peak_running = 0  # for tests and benchmarks: the bound held
        self._mean_s = 1.0  # moving average of a probe's seconds, for Retry-After

    @property
    def admitted(self) -> int:
        with self._lock:
            return self._admitted

    def retry_after_s(self) -> int:
        with self._lock:
            return max(1, math.ceil(self._mean_s * self._admitted / self.concurrency))

    def _timed(self, call: Callable[[], T]) -> T:
        with self._lock:
            self._running += 1
            self.peak_running = max(self.peak_running, self._running)
        started = time.monotonic()
        try:
            return call()
        finally:
            with self._lock:
                self._running -= 1
                self._mean_s = 0.8 * self._mean_s + 0.2 * (time.monotonic() - started)

    def _release(self, _: Future[T]) -> None:
        with self._lock:
            self._admitted -= 1

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args)` on a probe thread, awaited without holding a thread; ProbesBusy when full."""
        with self._lock:
            full = self._admitted >= self.capacity
            if not full:
                self._admitted += 1
        if full:
            raise ProbesBusy(self.retry_after_s())
        future = self._executor.submit(self._timed, functools.partial(fn, *args, **kwargs))
        future.add_done_callback(self._release)  # also when cancelled before it ran
        # a cancelled request cancels the future if it has not started; a started probe runs to its end
        return await asyncio.wrap_future(future)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
