"""Continuous batching for one served model, on its own thread.

Requests wait in a bounded queue (full: `QueueFull`, answered 503 with Retry-After). At every step the
thread admits waiting requests up to `max_batch` running rows (prefilled together, then merged into the
running batch), runs one decode step for every running row, hands each row's token to its sink, and
drops rows that finished (end of sequence, max tokens, cancelled, failed). A failure in one forward
fails the rows of that forward only; the thread keeps serving.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from model_owner_server.serving.adapters import LoadedAdapter
from model_owner_server.serving.engine import BatchState, Engine, merge, select_rows
from model_owner_server.serving.sampling import NonFiniteLogits, choose, finite_or_raise
from model_owner_server.serving.sinks import FinishReason, Sink

log = logging.getLogger("scaleot.serving")


class QueueFull(RuntimeError):
    def __init__(self, waiting: int, retry_after_s: int) -> None:
        super().__init__(f"the generation queue is full ({waiting} requests waiting); retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


@dataclass
class GenRequest:
    prompt: list[int]
    adapter: LoadedAdapter | None
    max_new: int
    sink: Sink
    eos: frozenset[int]
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    on_finish: Callable[[], None] | None = None  # e.g. unpin the adapter
    produced: list[int] = field(default_factory=list)
    cancelled: threading.Event = field(default_factory=threading.Event)
    generator: torch.Generator | None = None
    finished: bool = False

    def cancel(self) -> None:
        """Stop at the next step (the client went away, or a stop string was found)."""
        self.cancelled.set()


class Scheduler:
    def __init__(self, engine: Engine, max_batch: int, queue_limit: int, retry_after_s: int, name: str) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.queue_limit = queue_limit
        self.retry_after_s = retry_after_s
        self.name = name
        self._waiting: deque[GenRequest] = deque()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._rows: list[GenRequest] = []
        self._state: BatchState | None = None
        self.steps = 0
        self.peak_batch = 0

    def submit(self, request: GenRequest) -> None:
        with self._cond:
            if self._stopped:
                raise QueueFull(len(self._waiting), self.retry_after_s)
            if len(self._waiting) >= self.queue_limit:
                raise QueueFull(len(self._waiting), self.retry_after_s)
            if request.temperature > 0:
                request.generator = torch.Generator().manual_seed(
                    request.seed if request.seed is not None else int(torch.seed() % 2**63))
            self._waiting.append(request)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=f"serve-{self.name}", daemon=True)
                self._thread.start()
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._rows and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    for request in [*self._waiting, *self._rows]:
                        self._finish(request, "cancelled", None)
                    return
                admit = [self._waiting.popleft() for _ in range(min(len(self._waiting),
                                                                    self.max_batch - len(self._rows)))]
            try:
                if admit:
                    self._join(admit)
                if self._rows:
                    self._step()
            except Exception as exc:  # a failed forward fails its rows, never the thread
                log.exception("serving %s: a batch failed", self.name)
                for request in [*admit, *self._rows]:
                    self._finish(request, "error", exc)
                self._rows, self._state = [], None

    def _join(self, admit: list[GenRequest]) -> None:
        live = [r for r in admit if not self._finished_before(r)]
        if not live:
            return
        state, logits = self.engine.prefill([r.prompt for r in live], [r.adapter for r in live])
        keep = [i for i, request in enumerate(live) if self._advance(request, logits[i])]
        if len(keep) < len(live):
            if not keep:
                return
            state = select_rows(state, keep)
        joined = [live[i] for i in keep]
        self._state = state if self._state is None else merge(self._state, state)
        self._rows += joined
        self.peak_batch = max(self.peak_batch, len(self._rows))

    def _step(self) -> None:
        assert self._state is not None
        last = torch.tensor([r.produced[-1] for r in self._rows], dtype=torch.long)
        logits = self.engine.decode(self._state, last)
        self.steps += 1
        keep = [i for i, request in enumerate(self._rows) if self._advance(request, logits[i])]
        if len(keep) < len(self._rows):
            self._rows = [self._rows[i] for i in keep]
            self._state = select_rows(self._state, keep) if keep else None

    def _finished_before(self, request: GenRequest) -> bool:
        if request.cancelled.is_set():
            self._finish(request, "cancelled", None)
            return True
        return False

    def _advance(self, request: GenRequest, logits: torch.Tensor) -> bool:
        """Take the row's next token; whether the row keeps running."""
        if self._finished_before(request):
            return False
        try:
            finite_or_raise(logits, len(request.produced))
        except NonFiniteLogits as exc:
            self._finish(request, "error", exc)
            return False
        try:
            token = choose(logits, request.temperature, request.top_p, request.generator)
        except RuntimeError as exc:  # one row's sampling failure is that row's, not its batch's
            log.exception("serving %s: sampling failed for one request", self.name)
            self._finish(request, "error", exc)
            return False
        request.produced.append(token)
        request.sink.token(token)
        if token in request.eos:
            self._finish(request, "stop", None)
            return False
        if len(request.produced) >= request.max_new:
            self._finish(request, "length", None)
            return False
        return True

    @staticmethod
    def _finish(request: GenRequest, reason: FinishReason, error: Exception | None) -> None:
        if request.finished:  # exactly once, even when a failed batch lists a row again
            return
        request.finished = True
        if request.on_finish is not None:
            request.on_finish()
        request.sink.done(reason, error)
