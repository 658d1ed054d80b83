"""uvicorn's httptools protocol with bounded request heads: the quick-start `serve` has no proxy in front.

Stock uvicorn (httptools) buffers a request's header lines without limit and waits for them without a
deadline: eight 32 MiB headers left 400 MiB behind, and a connection that never finishes its headers
held its socket for ever. Here a request head (request line and headers) larger than
`SCALEOT_MAX_HEADER_BYTES` is answered 431 before more of it is parsed, and a head not complete within
`SCALEOT_HEADER_TIMEOUT_S` of its connection (or of the previous response) is answered 408; either
closes the connection. The number of header lines is capped in the app (`guard.py`, 431 as well).
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from model_owner_server.settings import Settings


@functools.cache
def _limits() -> tuple[int, float]:
    """(SCALEOT_MAX_HEADER_BYTES, SCALEOT_HEADER_TIMEOUT_S), read once per process (`serve` has validated the
    settings before uvicorn starts)."""
    settings = Settings()
    return settings.max_header_bytes, settings.header_timeout_s


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_head_bytes, self.head_timeout_s = _limits()
        self.in_head = True  # reading a request head (from the connection's start or after a response)
        self.head_bytes = 0
        self.heads_done = 0
        self.head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.in_head and len(data) > self.max_head_bytes - self.head_bytes:
            # feed only what the cap allows: a head that ends inside it goes on normally (its body or the
            # next pipelined request follows in the rest, with a budget of its own); one that does not is
            # refused before more of it is buffered
            room = max(self.max_head_bytes - self.head_bytes, 0)
            head, rest = data[:room], data[room:]
            done = self.heads_done
            self.head_bytes += len(head)
            if head:
                super().data_received(head)
            if self.transport.is_closing():
                return
            if self.heads_done == done:
                self._refuse(431, "Request Header Fields Too Large",
                             f"the request line and headers exceed {self.max_head_bytes} bytes")
                return
            self.data_received(rest)
            return
        if self.in_head:
            self.head_bytes += len(data)
        if data and not self.transport.is_closing():
            super().data_received(data)

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.heads_done += 1
        self._disarm_deadline()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.in_head, self.head_bytes = True, 0  # a pipelined request's head may follow at once

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.in_head:
            self._arm_deadline()

    def _arm_deadline(self) -> None:
        self._disarm_deadline()
        self.head_deadline = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _disarm_deadline(self) -> None:
        if self.head_deadline is not None:
            self.head_deadline.cancel()
            self.head_deadline = None

    def _head_timed_out(self) -> None:
        self.head_deadline = None
        if not self.in_head or self.transport.is_closing():
            return
        if self.head_bytes == 0 and self.cycle is not None:
            self.transport.close()  # an idle keep-alive connection: uvicorn's keep-alive timeout's job
            return
        self._refuse(408, "Request Timeout", f"the request headers did not arrive within {self.head_timeout_s:g} s")

    def _refuse(self, status: int, reason: str, message: str) -> None:
        body = f'{{"detail": "{message}"}}'.encode()
        head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode("ascii")
        self.logger.warning("refused a request head: %s", message)
        self.transport.write(head + body)
        self.transport.close()
