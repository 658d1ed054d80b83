"""Request heads against a real `scaleot-server serve` on loopback (raw sockets): too large a head is
431, too many header lines 431, a head that never finishes 408; each closes only its own connection,
and a normal request whose body arrives in the same packet as its head is unaffected."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.service.conftest import ADMIN_KEY
from tests.service.test_server import Server

MAX_HEAD = 8192


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("heads")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCALEOT_") or k == "SCALEOT_CACHE_DIR"}
    env.update(SCALEOT_DATA_DIR=str(tmp / "data"), SCALEOT_ADMIN_KEY=ADMIN_KEY, SCALEOT_MODELS='["tiny-llama"]',
               SCALEOT_WORKERS_WITH_SERVE="0", SCALEOT_MAX_HEADER_BYTES=str(MAX_HEAD), SCALEOT_HEADER_TIMEOUT_S="1.5",
               OMP_NUM_THREADS="1")
    running = Server(env, tmp / "server.log")
    running.start().close()
    yield running
    running.stop()


def _exchange(server: Server, data: bytes, wait: float = 0.0) -> bytes:
    """Send `data`, wait, then read the answer until the server closes or 5 s pass."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # refused midway: the answer is still there
            sock.sendall(data)
        time.sleep(wait)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
    return b"".join(chunks)


def _healthy(server: Server) -> None:
    assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200


def test_a_head_larger_than_the_cap_is_431_and_the_server_stays_up(server: Server) -> None:
    big = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (4 * MAX_HEAD)
    answer = _exchange(server, big)  # the head never ends: refused once the cap is passed
    assert answer.startswith(b"HTTP/1.1 431 ") and b"exceed 8192 bytes" in answer
    _healthy(server)


def test_too_many_header_lines_is_431(server: Server) -> None:
    lines = b"".join(b"X-%d: 1\r\n" % i for i in range(150))
    answer = _exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + lines + b"Connection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431 ") and b"at most 100 header lines" in answer


def test_a_head_that_never_finishes_is_408(server: Server) -> None:
    started = time.monotonic()
    answer = _exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n", wait=0.2)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"did not arrive within 1.5 s" in answer
    assert time.monotonic() - started < 4
    _healthy(server)


def test_a_body_in_the_same_packet_as_its_head_is_not_counted_as_head(server: Server) -> None:
    body = b'{"base_model": "tiny-llama", "method": "uniform", "alpha": 0.5, "pad": "' + b"p" * (3 * MAX_HEAD) + b'"}'
    request = (b"POST /v1/emulators HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + ADMIN_KEY.encode()
               + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
               + body)
    answer = _exchange(server, request)
    status = int(answer.split(b" ", 2)[1])
    assert status not in (408, 431, 500) and status < 500, answer[:300]


def test_keep_alive_requests_each_get_their_own_head_budget(server: Server) -> None:
    one = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (MAX_HEAD // 2) + b"\r\n\r\n"
    last = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (MAX_HEAD // 2) + b"\r\nConnection: close\r\n\r\n"
    answer = _exchange(server, one + one + last)  # three heads of 4 KiB each on one connection: 12 KiB in all
    assert answer.count(b"HTTP/1.1 200 ") == 3, answer[:500]


def test_server_log_names_the_refusals(server: Server) -> None:
    log = Path(server.log).read_text()
    assert "refused a request head" in log and "Traceback" not in log
