"""CPU time of one metadata request inside the API process, without the network (`bench api-cpu`).

The app is called through ASGI in a loop, one request at a time, so the figure is the Python work a
request costs the API process (routing, dependencies, the query, the answer): the part that bounds
one process's requests/s. `bench http` measures the same endpoints end to end under 32 clients; this
one isolates the server's share and is steady enough to compare two commits (run it on each,
alternating). The emulator is a built tiny-gpt2 LayerDrop emulator; the caller a data owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import statistics
import tempfile
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from benchmarks.service_load.http_load import fresh_database

ENDPOINTS = ("/v1/emulators/{id}", "/v1/emulators", "/v1/adapters")
SPEC = {"base_model": "tiny-gpt2", "method": "uniform", "alpha": 0.5, "adapter_bottom": 1, "adapter_top": 1}


async def _get(app: FastAPI, path: str, headers: list[tuple[bytes, bytes]]) -> int:
    sent: list[MutableMapping[str, Any]] = []
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "headers": headers,
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "root_path": "", "state": {}}

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return int(sent[0]["status"])


async def _measure(app: FastAPI, paths: list[str], headers: list[tuple[bytes, bytes]], requests: int,
                   rounds: int) -> dict[str, list[float]]:
    """Per path, CPU microseconds per request of each round (rounds alternate between the paths)."""
    per_round: dict[str, list[float]] = {p: [] for p in paths}
    async with app.router.lifespan_context(app):
        for path in paths:  # warm-up: caches, prepared statements, pooled connections
            for _ in range(100):
                await _get(app, path, headers)
        for _ in range(rounds):
            for path in paths:
                started = time.process_time()
                for _ in range(requests):
                    status = await _get(app, path, headers)
                    if status != 200:
                        raise RuntimeError(f"GET {path} answered {status}")
                per_round[path].append(1e6 * (time.process_time() - started) / requests)
    return per_round


def run(requests: int, rounds: int, database_url: str | None = None) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from model_owner_server.app.main import create_app
    from model_owner_server.jobs.runner import build_worker
    from model_owner_server.settings import Settings

    with tempfile.TemporaryDirectory(prefix="scaleot-api-cpu-") as tmp, contextlib.ExitStack() as stack:
        database = stack.enter_context(fresh_database(database_url)) if database_url else None
        admin_key = secrets.token_urlsafe(24)
        settings = Settings(data_dir=Path(tmp) / "data", database_url=database, admin_key=admin_key,
                            models=["tiny-gpt2"], workers_with_serve=0)
        app = create_app(settings)
        with TestClient(app) as client:  # set-up through the public API: a data owner and a built emulator
            admin = {"Authorization": f"Bearer {admin_key}"}
            key = client.post("/v1/owners", json={"name": "bench"}, headers=admin).raise_for_status().json()["api_key"]
            owner = {"Authorization": f"Bearer {key}"}
            emulator_id = client.post("/v1/emulators", json=SPEC, headers=owner).raise_for_status().json()["id"]
            build_worker(settings).run_until_idle()
            state = client.get(f"/v1/emulators/{emulator_id}", headers=owner).json()["status"]["state"]
            if state != "succeeded":
                raise RuntimeError(f"the bench emulator did not build: {state}")
        headers = [(b"authorization", owner["Authorization"].encode()), (b"host", b"bench")]
        paths = [e.format(id=emulator_id) for e in ENDPOINTS]
        measured = asyncio.run(_measure(app, paths, headers, requests, rounds))
    rows = [{"endpoint": endpoint, "cpu_us_per_request": statistics.median(measured[path]),
             "cpu_us_per_round": measured[path]} for endpoint, path in zip(ENDPOINTS, paths, strict=True)]
    backend = "sqlite" if database_url is None else database_url.split(":", 1)[0].split("+")[0]
    return {"benchmark": "api-cpu", "database": backend, "requests_per_round": requests, "rounds": rounds,
            "rows": rows, "note": "in-process ASGI calls, one at a time; CPU time of the API process only"}


def markdown(result: dict[str, Any]) -> str:
    lines = [f"API CPU per metadata request ({result['database']}; median of {result['rounds']} rounds x "
             f"{result['requests_per_round']} requests, in-process, no network)", "",
             "| endpoint | CPU us / request | rounds |", "|---|---|---|"]
    for row in result["rows"]:
        rounds = ", ".join(f"{x:.0f}" for x in row["cpu_us_per_round"])
        lines.append(f"| {row['endpoint']} | {row['cpu_us_per_request']:.0f} | {rounds} |")
    return "\n".join(lines) + "\n"
