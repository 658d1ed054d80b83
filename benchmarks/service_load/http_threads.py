"""Metadata latency against the API's thread count (`SCALEOT_API_THREADS`) and process count
(`SCALEOT_API_PROCESSES`), side by side in one run.

One server per setting, all started before measuring and each with its own emulator; the
endpoints are then measured in rounds that alternate between the servers, so a slow moment of the
shared machine falls on every setting alike. Per endpoint and setting: the median over rounds of the
p50, the p99 and requests/s (the load generator in this process, the server in its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.service_load.http_load import LocalServer, fresh_database, measure_latency, request_emulator

ENDPOINTS = ("/v1/emulators/{id}", "/v1/emulators", "/v1/adapters")

Setting = tuple[int, int]  # (API threads per process, API processes)


def parse_settings(text: str) -> list[Setting]:
    """`4,8,4x2`: a thread count, or THREADSxPROCESSES; raises ValueError with the item at fault."""
    settings: list[Setting] = []
    for item in (part.strip() for part in text.split(",")):
        threads, x, processes = item.partition("x")
        try:
            setting = (int(threads), int(processes if x else 1))
        except ValueError:
            raise ValueError(f"--api-threads: {item!r} is not N or NxP (threads x processes)") from None
        if not (1 <= setting[0] <= 256 and 1 <= setting[1] <= 16):
            raise ValueError(f"--api-threads: {item!r} needs 1-256 threads and 1-16 processes")
        settings.append(setting)
    if not settings or len(set(settings)) != len(settings):
        raise ValueError(f"--api-threads: give distinct settings, got {text!r}")
    return settings


def run(model: str, method: str, settings: list[Setting], clients: int, per_client: int, rounds: int, port: int,
        database_url: str | None = None) -> dict[str, Any]:
    spec = {"base_model": model, "method": method, "alpha": 0.5, "beta": 0.0}
    with contextlib.ExitStack() as stack:
        servers: dict[Setting, tuple[LocalServer, dict[str, str], str]] = {}
        for i, (threads, processes) in enumerate(settings):
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="scaleot-bench-")))
            database = stack.enter_context(fresh_database(database_url)) if database_url else None
            server = LocalServer(tmp / "data", port + i, [model], processes, database, api_threads=threads)
            stack.callback(server.stop)
            headers = {"Authorization": f"Bearer {server.owner_key()}"}
            servers[threads, processes] = (server, headers,
                                           request_emulator(server.url, headers, spec, timeout=3600)["id"])
        samples: dict[tuple[Setting, str], list[dict[str, float]]] = {}
        for _ in range(rounds):
            for setting, (server, headers, emulator_id) in servers.items():
                for endpoint in ENDPOINTS:
                    x = asyncio.run(measure_latency(server.url, endpoint.format(id=emulator_id), headers, clients,
                                                    per_client))
                    if x.errors:
                        raise RuntimeError(f"{x.errors} failed requests on {endpoint} with {setting[0]} API "
                                           f"threads x {setting[1]} processes")
                    samples.setdefault((setting, endpoint), []).append(
                        {"p50_ms": x.median_ms, "p99_ms": x.p99_ms, "requests_per_s": x.requests_per_s})
    rows = [{"api_threads": threads, "api_processes": processes, "endpoint": endpoint, "rounds": len(runs),
             **{k: statistics.median(r[k] for r in runs) for k in ("p50_ms", "p99_ms", "requests_per_s")},
             "p99_ms_per_round": [r["p99_ms"] for r in runs]}
            for ((threads, processes), endpoint), runs in samples.items()]
    database = "sqlite" if database_url is None else database_url.split(":", 1)[0].split("+")[0]
    return {"model": model, "method": method, "database": database, "clients": clients,
            "requests_per_client": per_client, "rounds": rounds, "cpu_count": os.cpu_count(), "rows": rows,
            "note": "one API process per server; client and servers on the same machine, sharing its cores"}


def markdown(result: dict[str, Any]) -> str:
    lines = [f"Metadata latency by API threads and processes: {result['database']}, {result['clients']} concurrent "
             f"clients x {result['requests_per_client']} requests, median of {result['rounds']} alternating rounds",
             "", "| endpoint | API threads | API processes | p50 ms | p99 ms | req/s |", "|---|---|---|---|---|---|"]
    for row in sorted(result["rows"], key=lambda r: (r["endpoint"], -r["api_threads"], r.get("api_processes", 1))):
        lines.append(f"| {row['endpoint']} | {row['api_threads']} | {row.get('api_processes', 1)} | "
                     f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['requests_per_s']:.0f} |")
    return "\n".join(lines) + "\n"
