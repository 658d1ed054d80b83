"""Peak RSS of the API process while it answers one unauthenticated ~200 MB JSON request, for the
current tree and (with --before COMMIT) for an older commit checked out in a temporary clone.

    python scripts/measure_oversize_rss.py --before ebaacc8 [--mb 200] [--out results/oversize-rss.json]

Each source runs as `scaleot-server serve` (one API process, no worker) on loopback with the same
virtual environment (PYTHONPATH selects the source). The request is `POST /v1/emulators` with no
`Authorization` header and a declared `Content-Length` of MB megabytes of JSON, sent from a raw socket
as fast as the server takes it. Measured: the API process's RSS before the request, its peak during it
(`VmHWM` after resetting it through /proc/PID/clear_refs, cross-checked by sampling `VmRSS` every
10 ms), the status answered, how many body bytes the server took, and the time to the answer.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHUNK = 1 << 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if b" 200 " in sock.recv(200):
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("the server did not start")


def oversize_request(port: int, megabytes: int) -> dict[str, Any]:
    """Send the body until the server answers or closes; returns status, bytes sent, seconds."""
    body_len = megabytes * CHUNK
    head = (f"POST /v1/emulators HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {body_len}\r\n\r\n").encode()
    prefix = b'{"base_model": "'
    chunk = b"a" * CHUNK
    answer: list[bytes] = []
    started = time.monotonic()
    answered_at: list[float] = []
    with socket.create_connection(("127.0.0.1", port), timeout=600) as sock:
        def read() -> None:
            try:
                data = sock.recv(4096)
            except OSError:
                data = b""
            answered_at.append(time.monotonic() - started)
            answer.append(data)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        sent = 0
        try:
            sock.sendall(head + prefix)
            sent = len(prefix)
            while sent < body_len and not answer:
                piece = chunk[: min(CHUNK, body_len - sent - 2)] if body_len - sent > 2 else b'"}'
                sock.sendall(piece)
                sent += len(piece)
        except OSError:
            pass  # the server answered and closed the connection without reading the rest
        reader.join(600)
    first = answer[0] if answer else b""
    status = int(first.split(b" ", 2)[1]) if first.startswith(b"HTTP/") else None
    return {"status": status, "body_bytes_sent": sent, "body_bytes_declared": body_len,
            "seconds_to_answer": round(answered_at[0], 3) if answered_at else None}


def measure(source: Path, megabytes: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="scaleot-rss-") as tmp:
        env = {**os.environ, "PYTHONPATH": str(source), "SCALEOT_DATA_DIR": tmp,
               "SCALEOT_ADMIN_KEY": secrets.token_urlsafe(24), "SCALEOT_WORKERS_WITH_SERVE": "0",
               "SCALEOT_MODELS": '["tiny-gpt2"]'}
        port = free_port()
        command = [sys.executable, "-c", "from model_owner_server.cli import app; app()", "serve",
                   "--host", "127.0.0.1", "--port", str(port)]
        with (Path(tmp) / "server.log").open("wb") as log:
            proc = subprocess.Popen(command, cwd=source, env=env, stdout=log, stderr=log)
        try:
            wait_ready(port, proc)
            time.sleep(1.0)
            before_kb = status_kb(proc.pid, "VmRSS")
            Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # reset VmHWM to the current RSS
            samples: list[int] = []
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    samples.append(status_kb(proc.pid, "VmRSS"))
                    time.sleep(0.01)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            request = oversize_request(port, megabytes)
            time.sleep(1.0)  # let a server that is still reading finish
            stop.set()
            sampler.join()
            peak_kb = max(status_kb(proc.pid, "VmHWM"), *samples)
        finally:
            proc.terminate()
            proc.wait(30)
    return {"source": str(source), "rss_before_mb": round(before_kb / 1024, 1), "peak_rss_mb": round(peak_kb / 1024, 1),
            "peak_growth_mb": round((peak_kb - before_kb) / 1024, 1), **request}


def clone_at(commit: str, dest: Path) -> Path:
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(ROOT), str(dest)], check=True)
    subprocess.run(["git", "-C", str(dest), "checkout", "-q", commit], check=True)
    return dest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", help="an older commit to measure too (checked out in a temporary clone)")
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "oversize-rss.json")
    args = parser.parse_args()
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="scaleot-before-") as tmp:
        if args.before:
            rows[f"before ({args.before})"] = measure(clone_at(args.before, Path(tmp) / "src"), args.mb)
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        rows[f"after ({head} + working tree)"] = measure(ROOT, args.mb)
    print(f"{'source':32} | status | body MB sent | seconds | RSS before MB | peak RSS MB | growth MB")
    for name, row in rows.items():
        print(f"{name:32} | {row['status']} | {row['body_bytes_sent'] / 2**20:12.1f} | {row['seconds_to_answer']} | "
              f"{row['rss_before_mb']:13} | {row['peak_rss_mb']:11} | {row['peak_growth_mb']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"megabytes": args.mb, "runs": rows}, indent=2) + "\n")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
