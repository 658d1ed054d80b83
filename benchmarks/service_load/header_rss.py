"""Benchmark: the API process's memory under oversized request heads (issue 27 item 4).

Starts the API twice on loopback, each on its own data folder and without a worker: `scaleot-server
serve` (bounded heads, `app/bounded_http.py`) and, for comparison, the same app under stock uvicorn
(httptools, unbounded heads). Each gets `n` concurrent connections that send one header of `size` bytes
(never finishing the head), then `/healthz`; RSS is read from /proc before, at its peak while the
heads arrive, and after the connections are gone. The answers each connection got are counted.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.service_load.local_server import CLI, stop_server, wait_until_healthy

STOCK = [sys.executable, "-m", "uvicorn", "model_owner_server.app.serve:serving_app", "--factory",
         "--http", "httptools"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _send_head(port: int, size: int, answers: list[str]) -> None:
    chunk = b"a" * (1 << 20)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
            sent = 0
            while sent < size:
                sock.sendall(chunk[: min(len(chunk), size - sent)])
                sent += len(chunk)
            sock.settimeout(5)
            answer = sock.recv(64)
            answers.append(answer.split(b"\r\n", 1)[0].decode(errors="replace") or "closed")
    except OSError as exc:
        answers.append(f"connection ended: {type(exc).__name__}")


def measure(command: list[str], label: str, n: int, size: int) -> dict[str, Any]:
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="header-rss-") as tmp:
        env = {**os.environ, "SCALEOT_DATA_DIR": tmp, "SCALEOT_WORKERS_WITH_SERVE": "0",
               "SCALEOT_ADMIN_KEY": "header-rss-admin-key-0123456789", "SCALEOT_ENVIRONMENT": "development"}
        args = [*command, "--port", str(port)] + (["--host", "127.0.0.1"] if command is STOCK else [])
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            if not wait_until_healthy(f"http://127.0.0.1:{port}", proc):
                raise RuntimeError(f"{label}: the server did not start")
            before = _rss_mb(proc.pid)
            answers: list[str] = []
            threads = [threading.Thread(target=_send_head, args=(port, size, answers)) for _ in range(n)]
            peak = before
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                peak = max(peak, _rss_mb(proc.pid))
                time.sleep(0.05)
            time.sleep(1.0)
            after = _rss_mb(proc.pid)
            healthy = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
        finally:
            stop_server(proc)
    return {"server": label, "rss_before_mb": round(before, 1), "rss_peak_mb": round(peak, 1),
            "rss_after_mb": round(after, 1), "answers": sorted(set(answers)), "healthy_after": healthy}


def run(n: int = 8, size_mb: int = 32) -> dict[str, Any]:
    size = size_mb << 20
    rows = [measure([*CLI, "serve"], "scaleot-server serve (bounded heads)", n, size),
            measure(STOCK, "stock uvicorn (httptools)", n, size)]
    return {"benchmark": "header-rss", "connections": n, "header_mb": size_mb, "rows": rows,
            "host": {"machine": platform.machine(), "python": platform.python_version()}}


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# API memory under {result['connections']} concurrent request heads of {result['header_mb']} MiB",
             "", "Command: `scaleot-bench header-rss`. RSS of the API process (no worker), MiB.", "",
             "| server | before | peak | after | answers | healthy after |", "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['server']} | {r['rss_before_mb']:.0f} | {r['rss_peak_mb']:.0f} | {r['rss_after_mb']:.0f} | "
                     f"{'; '.join(r['answers'])} | {'yes' if r['healthy_after'] else 'no'} |")
    return "\n".join(lines) + "\n"
