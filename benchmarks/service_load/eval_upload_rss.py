"""Peak RSS of the API process while it takes large multiple-choice JSONL evaluation uploads (issue 27
item 1), for the current tree and (with --before COMMIT) an older commit checked out in a temporary clone.

    python -m benchmarks.service_load.eval_upload_rss --before 698b91a [--out results/eval-upload-rss.json]

Each source runs as `scaleot-server serve` (one API process, no worker, tiny-gpt2) on loopback with this
virtual environment (PYTHONPATH selects the source). Two uploads of short rows (~60 bytes each), sent
as a streamed multipart body with `adapter_id` and `limit` before the file, as the client sends them:
`limit=1` on 100 MiB (about 1.8 M rows) and no `limit` on 20 MiB (about 360,000 rows, past the
100,000-row cap), each on a fresh server. The adapter id is unknown on purpose: the route reads and
checks the rows before it looks the adapter up, so the answer after the rows is a 404, and nothing is
queued. Measured per upload:
the API's RSS before, its peak (`VmHWM` reset through /proc/PID/clear_refs, cross-checked by sampling
`VmRSS` every 10 ms), the status and the seconds to the answer.
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from benchmarks.service_load.local_server import CLI, stop_server, wait_until_healthy

ROOT = Path(__file__).resolve().parents[2]
BOUNDARY = "rss-boundary-7f3a"
CASES = [("limit=1, 100 MiB", 100, "1"), ("no limit, 20 MiB", 20, None)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def body(megabytes: int, limit: str | None) -> Iterator[bytes]:
    """The multipart body, generated 1 MiB at a time (the sender holds no copy of the file)."""
    fields = {"adapter_id": "ada-0000000000000000", **({"limit": limit} if limit else {})}
    for name, value in fields.items():
        yield f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    yield (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
           "Content-Type: application/octet-stream\r\n\r\n").encode()
    rows = b"".join(b'{"context": "q%07d", "choices": ["a", "b"], "label": 0}\n' % i for i in range(17_000))
    sent = 0
    while sent < megabytes * 2**20:
        yield rows
        sent += len(rows)
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def upload(url: str, key: str, pid: int, megabytes: int, limit: str | None) -> dict[str, Any]:
    before_kb = status_kb(pid, "VmRSS")
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(status_kb(pid, "VmRSS"))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    try:
        response = httpx.post(f"{url}/v1/evaluations", content=body(megabytes, limit), timeout=300,
                              headers={"Authorization": f"Bearer {key}",
                                       "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
        status, detail = response.status_code, str(response.json().get("detail"))[:160]
    except httpx.HTTPError as exc:  # a server that answers early may close before the body is sent
        status, detail = None, f"{type(exc).__name__}: {exc}"[:160]
    seconds = time.monotonic() - started
    time.sleep(0.5)
    stop.set()
    sampler.join()
    peak_kb = max(status_kb(pid, "VmHWM"), *samples)
    return {"status": status, "detail": detail, "seconds": round(seconds, 2),
            "rss_before_mb": round(before_kb / 1024, 1), "peak_rss_mb": round(peak_kb / 1024, 1),
            "peak_growth_mb": round((peak_kb - before_kb) / 1024, 1)}


def measure(source: Path, megabytes: int, limit: str | None) -> dict[str, Any]:
    """One upload on a fresh server (a first upload's freed memory would hide the second one's growth)."""
    with tempfile.TemporaryDirectory(prefix="scaleot-eval-rss-") as tmp:
        admin = secrets.token_urlsafe(24)
        env = {**os.environ, "PYTHONPATH": str(source), "SCALEOT_DATA_DIR": tmp, "SCALEOT_ADMIN_KEY": admin,
               "SCALEOT_WORKERS_WITH_SERVE": "0", "SCALEOT_MODELS": '["tiny-gpt2"]'}
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with (Path(tmp) / "server.log").open("wb") as log:
            proc = subprocess.Popen([*CLI, "serve", "--host", "127.0.0.1", "--port", str(port)], cwd=source,
                                    env=env, stdout=log, stderr=log)
        try:
            if not wait_until_healthy(url, proc):
                raise RuntimeError((Path(tmp) / "server.log").read_text()[-2000:])
            owner = httpx.post(f"{url}/v1/owners", json={"name": "rss"}, headers={"Authorization": f"Bearer {admin}"})
            key = owner.json()["api_key"]
            time.sleep(1.0)
            return upload(url, key, proc.pid, megabytes, limit)
        finally:
            stop_server(proc)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--before", help="an older commit to measure too (checked out in a temporary clone)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "eval-upload-rss.json")
    args = parser.parse_args()
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="scaleot-before-") as tmp:
        if args.before:
            src = Path(tmp) / "src"
            subprocess.run(["git", "clone", "-q", "--no-checkout", str(ROOT), str(src)], check=True)
            subprocess.run(["git", "-C", str(src), "checkout", "-q", args.before], check=True)
            runs[f"before ({args.before})"] = {name: measure(src, mb, limit) for name, mb, limit in CASES}
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        runs[f"after ({head} + working tree)"] = {name: measure(ROOT, mb, limit) for name, mb, limit in CASES}
    for source, cases in runs.items():
        for case, row in cases.items():
            print(f"{source:34} | {case:17} | {row['status']} | {row['seconds']:6} s | RSS {row['rss_before_mb']} -> "
                  f"peak {row['peak_rss_mb']} MB (+{row['peak_growth_mb']})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": "python -m benchmarks.service_load.eval_upload_rss"
                                    + (f" --before {args.before}" if args.before else ""), "runs": runs},
                                   indent=2) + "\n")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
