"""Fuzz of adapter uploads: thousands of mutated safetensors files and LoRA directories
(`upload_mutations.py`) sent to a real server; every answer must be 201 or 4xx, and the server must
keep answering (`/healthz` between batches). Prints a table (mutation x status) and writes JSON.

    python -m tests.fuzz.upload_fuzz --cases 3000 [--seed 0] [--out results/upload-fuzz.json]

`run_cases` is also what the bounded test (`tests/service/test_upload_fuzz.py`) runs in-process.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from tests.fuzz.fuzz_seed import FuzzServer, Seed, seed
from tests.fuzz.upload_mutations import Files, full_case, lora_case

HEALTH_EVERY = 100


def acceptable(status: int) -> bool:
    return status == 201 or 400 <= status < 500


def upload(client: httpx.Client, headers: dict[str, str], emulator_id: str, files: Files) -> int:
    parts = [("file", (name, data, "application/octet-stream")) for name, data in files]
    return client.post("/v1/adapters", data={"emulator_id": emulator_id}, files=parts, headers=headers).status_code


def run_cases(client: httpx.Client, seeded: Seed, cases: int, rng_seed: int) -> dict[str, Any]:
    """Send `cases` mutated uploads (half full adapters, half LoRA directories)."""
    rng = random.Random(rng_seed)
    headers = {"Authorization": f"Bearer {seeded.owner_key}"}
    table: dict[str, collections.Counter[int]] = collections.defaultdict(collections.Counter)
    bad: list[dict[str, Any]] = []
    alive = True
    started = time.monotonic()
    for index in range(cases):
        if rng.random() < 0.5:
            kind, files = full_case(rng, seeded.full_adapter)
            emulator = seeded.full_emulator
        else:
            kind, files = lora_case(rng, seeded.lora_files)
            emulator = seeded.lora_emulator
        try:
            status = upload(client, headers, emulator, files)
        except httpx.HTTPError as exc:
            status = 0
            bad.append({"case": index, "kind": kind, "error": f"{type(exc).__name__}: {exc}"})
        table[kind][status] += 1
        if not acceptable(status) and status:
            bad.append({"case": index, "kind": kind, "status": status})
        if (index + 1) % HEALTH_EVERY == 0 or index + 1 == cases:
            alive = alive and client.get("/healthz").status_code == 200
    statuses = collections.Counter[int]()
    for counts in table.values():
        statuses.update(counts)
    return {"cases": cases, "seed": rng_seed, "seconds": round(time.monotonic() - started, 1),
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "by_mutation": {kind: {str(k): v for k, v in sorted(c.items())} for kind, c in sorted(table.items())},
            "not_201_or_4xx": bad[:50], "server_alive": alive}


def print_table(result: dict[str, Any]) -> None:
    codes = list(result["statuses"])
    print(f"{'mutation':34} | " + " | ".join(f"{c:>5}" for c in codes))
    for kind, counts in result["by_mutation"].items():
        print(f"{kind:34} | " + " | ".join(f"{counts.get(c, 0):>5}" for c in codes))
    print(f"{'total':34} | " + " | ".join(f"{result['statuses'][c]:>5}" for c in codes))
    print(f"{result['cases']} cases in {result['seconds']} s; not 201/4xx: {len(result['not_201_or_4xx'])}; "
          f"server answering throughout: {result['server_alive']}")


def main() -> int:
    parser = argparse.ArgumentParser(description="fuzz adapter uploads against a real server on loopback")
    parser.add_argument("--cases", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results") / "upload-fuzz.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="scaleot-upload-fuzz-") as tmp:
        server = FuzzServer(Path(tmp))
        try:
            server.start()
            seeded = seed(server)
            with httpx.Client(base_url=server.url, timeout=120) as client:
                result = run_cases(client, seeded, args.cases, args.seed)
            result["server_alive"] = result["server_alive"] and server.alive()
        finally:
            server.stop()
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {args.out}")
    return 0 if result["server_alive"] and not result["not_201_or_4xx"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
