"""HTTP load benchmark of the service: status/metadata latency under concurrent clients, and emulator
download throughput relative to reading the same file from disk.

Without `--url` it starts a real `scaleot-server serve` (uvicorn + worker) on loopback with a fresh
data directory, creates a data-owner key, requests an emulator and waits for it; with `--url` it
measures a running server (`--key`, `--emulator-id`; `--data-dir` for the disk comparison).
Client and server share the machine's cores: the numbers are a lower bound on a server of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.service_load.local_server import CLI, stop_server, wait_until_healthy
from shared.job_outcomes import FINISHED, JobState


@dataclass
class Latency:
    endpoint: str
    requests: int
    errors: int
    median_ms: float
    p99_ms: float
    max_ms: float
    requests_per_s: float


@dataclass
class Download:
    file: str
    size_mb: float
    http_mb_s: float
    disk_mb_s: float
    ratio: float
    concurrent_http_mb_s: float
    curl_mb_s: float | None  # a C client: what the server delivers without Python on the client side
    curl_ratio: float | None
    # the whole emulator (every manifest file) written to disk: the data owner's client (resumable,
    # sha256-verified, renamed into place) against curl writing the same files over one connection
    emulator_mb: float = 0.0
    client_mb_s: float = 0.0
    curl_to_disk_mb_s: float | None = None
    client_vs_curl: float | None = None
    # the same work as the client: curl, then `sha256sum` over the files it wrote
    curl_sha256sum_mb_s: float | None = None
    client_vs_curl_sha256sum: float | None = None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def _raw_get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """One GET on a kept-alive connection; returns the status. A minimal HTTP/1.1 client (the
    server's responses always carry Content-Length here), so the load generator costs little CPU
    next to the server on the same machine."""
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def measure_latency(url: str, path: str, headers: dict[str, str], clients: int, per_client: int) -> Latency:
    host, port = httpx.URL(url).host, httpx.URL(url).port or 80
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", *(f"{k}: {v}" for k, v in headers.items())]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    times: list[float] = []
    errors = 0

    async def one_client() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            await _raw_get(reader, writer, request)  # warm up
            await ready.wait()
            for _ in range(per_client):
                started = time.perf_counter()
                status = await _raw_get(reader, writer, request)
                times.append(time.perf_counter() - started)
                errors += status != 200
        finally:
            writer.close()

    ready = asyncio.Event()
    tasks = [asyncio.create_task(one_client()) for _ in range(clients)]
    await asyncio.sleep(0.5)  # every client connected and warmed up
    wall = time.perf_counter()
    ready.set()
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - wall
    ms = [t * 1000 for t in times]
    return Latency(path, len(ms), errors, statistics.median(ms), percentile(ms, 0.99), max(ms), len(ms) / wall)


def disk_read_mb_s(path: Path, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        with path.open("rb") as handle:
            while handle.read(1 << 20):
                pass
        rates.append(path.stat().st_size / 1e6 / (time.perf_counter() - started))
    return statistics.median(rates)


async def http_download_mb_s(url: str, path: str, headers: dict[str, str], size: int, parallel: int) -> float:
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600) as client:
        async def fetch() -> int:
            got = 0
            async with client.stream("GET", path) as response:
                async for chunk in response.aiter_raw():  # a chunk_size makes httpx re-buffer
                    got += len(chunk)
            if got != size:
                raise RuntimeError(f"downloaded {got} bytes of {path}, expected {size}")
            return got

        started = time.perf_counter()
        total = sum(await asyncio.gather(*(fetch() for _ in range(parallel))))
        return total / 1e6 / (time.perf_counter() - started)


def measure_download(url: str, emulator: dict[str, Any], headers: dict[str, str], local: Path, repeats: int
                     ) -> Download:
    entry = next(f for f in emulator["files"] if f["name"] == "emulator.safetensors")
    disk = disk_read_mb_s(local / entry["name"], repeats)
    http = statistics.median(asyncio.run(http_download_mb_s(url, entry["url"], headers, entry["size"], 1))
                             for _ in range(repeats))
    concurrent = asyncio.run(http_download_mb_s(url, entry["url"], headers, entry["size"], 4))
    curl = curl_mb_s(url + entry["url"], headers, entry["size"], repeats)
    total = sum(int(f["size"]) for f in emulator["files"])
    # alternate the two so that both see the same machine state
    client_rates: list[float] = []
    curl_rates: list[float] = []
    checked_rates: list[float] = []
    with tempfile.TemporaryDirectory(prefix="scaleot-dl-") as tmp:
        for i in range(repeats):
            client_rates.append(client_download_mb_s(url, headers["Authorization"], emulator["id"], Path(tmp) / f"c{i}",
                                                     total))
            for check, rates in ((False, curl_rates), (True, checked_rates)):
                rate = curl_files_mb_s(url, headers, emulator["files"], Path(tmp) / f"curl{i}", total, check)
                if rate is not None:
                    rates.append(rate)
    client = statistics.median(client_rates)
    curl_disk = statistics.median(curl_rates) if curl_rates else None
    checked = statistics.median(checked_rates) if checked_rates else None
    return Download(entry["name"], entry["size"] / 1e6, http, disk, http / disk, concurrent, curl,
                    curl / disk if curl else None, total / 1e6, client, curl_disk,
                    client / curl_disk if curl_disk else None, checked, client / checked if checked else None)


def client_download_mb_s(url: str, authorization: str, emulator_id: str, out: Path, total: int) -> float:
    """The data owner's `download_emulator`, end to end (hash check and rename included)."""
    from data_owner_client.client import ScaleOTClient

    with ScaleOTClient(url, authorization.removeprefix("Bearer ")) as client:
        started = time.perf_counter()
        client.download_emulator(emulator_id, out)
        rate = total / 1e6 / (time.perf_counter() - started)
    shutil.rmtree(out)
    return rate


def curl_files_mb_s(url: str, headers: dict[str, str], files: list[dict[str, Any]], out: Path, total: int,
                    sha256sum: bool = False) -> float | None:
    """curl writing every emulator file to disk over one kept-alive connection; with `sha256sum`, the
    files are then checked by coreutils' `sha256sum -c` (timed too), the work the client also does."""
    if shutil.which("curl") is None or (sha256sum and shutil.which("sha256sum") is None):
        return None
    out.mkdir()
    command = ["curl", "-sS", "--fail"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    for f in files:
        command += ["-o", str(out / f["name"]), url + f["url"]]
    sums = "".join(f"{f['sha256']}  {f['name']}\n" for f in files if f.get("sha256"))
    started = time.perf_counter()
    subprocess.run(command, check=True)
    if sha256sum:
        subprocess.run(["sha256sum", "--quiet", "-c", "-"], input=sums.encode(), cwd=out, check=True)
    rate = total / 1e6 / (time.perf_counter() - started)
    shutil.rmtree(out)
    return rate


def curl_mb_s(full_url: str, headers: dict[str, str], size: int, repeats: int) -> float | None:
    """Median download rate measured by curl (None when curl is not installed)."""
    if shutil.which("curl") is None:
        return None
    rates = []
    for _ in range(repeats):
        command = ["curl", "-sS", "-o", "/dev/null", "-w", "%{speed_download} %{size_download}", full_url]
        for name, value in headers.items():
            command += ["-H", f"{name}: {value}"]
        speed, got = subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()
        if int(float(got)) != size:
            raise RuntimeError(f"curl downloaded {got} bytes, expected {size}")
        rates.append(float(speed) / 1e6)
    return statistics.median(rates)


class LocalServer:
    """`scaleot-server serve` in a subprocess with its own data directory and admin key."""

    def __init__(self, data_dir: Path, port: int, models: list[str], api_processes: int = 1,
                 database_url: str | None = None, api_threads: int | None = None) -> None:
        self.admin_key = secrets.token_urlsafe(24)
        self.url = f"http://127.0.0.1:{port}"
        self.data_dir = data_dir
        env = {**os.environ, "SCALEOT_DATA_DIR": str(data_dir), "SCALEOT_ADMIN_KEY": self.admin_key,
               "SCALEOT_MODELS": json.dumps(models), "SCALEOT_API_PROCESSES": str(api_processes)}
        if database_url:
            env["SCALEOT_DATABASE_URL"] = database_url
        if api_threads is not None:
            env["SCALEOT_API_THREADS"] = str(api_threads)
        self.log = (data_dir.parent / "server.log").open("wb")
        self.proc = subprocess.Popen([*CLI, "serve", "--port", str(port)], env=env, stdout=self.log, stderr=self.log)
        if not wait_until_healthy(self.url, self.proc):
            self.stop()  # its data dir may be a temporary one, gone with the log: quote the log's end
            tail = Path(self.log.name).read_text(errors="replace")[-3000:]
            raise RuntimeError(f"server on port {port} did not start; the end of its log:\n{tail}")

    def owner_key(self) -> str:
        response = httpx.post(f"{self.url}/v1/owners", json={"name": f"bench-{secrets.token_hex(3)}"},
                              headers={"Authorization": f"Bearer {self.admin_key}"})
        response.raise_for_status()
        return str(response.json()["api_key"])

    def stop(self) -> None:
        stop_server(self.proc)
        self.log.close()


def request_emulator(url: str, headers: dict[str, str], spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        emulator_id = client.post("/v1/emulators", json=spec).raise_for_status().json()["id"]
        deadline = time.monotonic() + timeout
        while True:
            body: dict[str, Any] = client.get(f"/v1/emulators/{emulator_id}").json()
            if body["status"]["state"] == JobState.succeeded:
                return body
            if body["status"]["state"] in FINISHED or time.monotonic() > deadline:
                raise RuntimeError(f"emulator {emulator_id}: {body['status']}")
            time.sleep(0.5)


def run(url: str, headers: dict[str, str], emulator: dict[str, Any], local_dir: Path, clients: int,
        per_client: int, repeats: int) -> dict[str, Any]:
    eid = emulator["id"]
    paths = ["/healthz", "/v1/models", f"/v1/emulators/{eid}", "/v1/emulators", "/v1/adapters"]
    latencies = [asyncio.run(measure_latency(url, p, headers, clients, per_client)) for p in paths]
    download = measure_download(url, emulator, headers, local_dir, repeats)
    return {"emulator_id": eid, "base_model": emulator["base_model"], "method": emulator["method"],
            "clients": clients, "requests_per_client": per_client, "cpu_count": os.cpu_count(),
            "latency": [asdict(x) for x in latencies], "download": asdict(download),
            "note": "client and server on the same machine, sharing its cores"}


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the PostgreSQL server of `server_url`, dropped afterwards (the run's
    data directory is new too, so rows from an earlier run would point at files that are not there)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"bench_{secrets.token_hex(6)}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def local_run(model: str, method: str, clients: int, per_client: int, repeats: int, port: int,
              api_processes: int = 1, database_url: str | None = None) -> dict[str, Any]:
    spec = {"base_model": model, "method": method, "alpha": 0.5, "beta": 0.0}
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="scaleot-bench-"))
        database = stack.enter_context(fresh_database(database_url)) if database_url else None
        server = LocalServer(Path(tmp) / "data", port, [model], api_processes, database)
        try:
            headers = {"Authorization": f"Bearer {server.owner_key()}"}
            started = time.perf_counter()
            emulator = request_emulator(server.url, headers, spec, timeout=3600)
            build_s = time.perf_counter() - started
            local = server.data_dir / "artifacts" / "emulators" / emulator["id"]
            result = run(server.url, headers, emulator, local, clients, per_client, repeats)
            result["build_seconds"] = build_s
            result["api_processes"] = api_processes
            result["database"] = "sqlite" if database_url is None else database_url.split(":", 1)[0].split("+")[0]
            return result
        finally:
            server.stop()


def markdown(result: dict[str, Any]) -> str:
    server = (f", {result['api_processes']} API process(es) on {result['database']}"
              if "api_processes" in result else "")
    lines = [f"HTTP load: {result['base_model']} {result['method']} emulator {result['emulator_id']}, "
             f"{result['clients']} concurrent clients x {result['requests_per_client']} requests{server}",
             "", "| endpoint | requests | errors | median ms | p99 ms | max ms | req/s |",
             "|---|---|---|---|---|---|---|"]
    for x in result["latency"]:
        lines.append(f"| {x['endpoint']} | {x['requests']} | {x['errors']} | {x['median_ms']:.1f} | "
                     f"{x['p99_ms']:.1f} | {x['max_ms']:.1f} | {x['requests_per_s']:.0f} |")
    d = result["download"]
    curl = "n/a" if d["curl_mb_s"] is None else f"{d['curl_mb_s']:.0f} ({d['curl_ratio']:.2f} of disk)"
    lines += ["", "| file | MB | disk MB/s | HTTP MB/s, httpx client | HTTP / disk | 4 parallel httpx (total) | "
              "HTTP MB/s, curl |", "|---|---|---|---|---|---|---|",
              f"| {d['file']} | {d['size_mb']:.1f} | {d['disk_mb_s']:.0f} | {d['http_mb_s']:.0f} | {d['ratio']:.2f} | "
              f"{d['concurrent_http_mb_s']:.0f} | {curl} |"]
    if d.get("client_mb_s"):
        ratio = "n/a" if d.get("client_vs_curl") is None else f"{d['client_vs_curl']:.2f}"
        curl_disk = "n/a" if d.get("curl_to_disk_mb_s") is None else f"{d['curl_to_disk_mb_s']:.0f}"
        checked = "n/a" if d.get("curl_sha256sum_mb_s") is None else f"{d['curl_sha256sum_mb_s']:.0f}"
        ratio2 = "n/a" if d.get("client_vs_curl_sha256sum") is None else f"{d['client_vs_curl_sha256sum']:.2f}"
        lines += ["", "Whole emulator to disk, side by side (median of the repeats):", "",
                  "| MB | scaleot client MB/s (resumable, sha256-verified) | curl MB/s (no check) | client / curl | "
                  "curl + sha256sum MB/s | client / (curl + sha256sum) |", "|---|---|---|---|---|---|",
                  f"| {d['emulator_mb']:.1f} | {d['client_mb_s']:.0f} | {curl_disk} | {ratio} | {checked} | {ratio2} |"]
    lines += ["", result["note"]]
    return "\n".join(lines)
