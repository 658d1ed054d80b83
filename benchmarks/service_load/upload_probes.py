"""The API under concurrent adapter uploads (issue 27 item 3): its peak RSS and the latency of /healthz
while N uploads are probed, for the current tree and (with --before COMMIT) an older commit.

    python -m benchmarks.service_load.upload_probes --before 7cf51be [--model smollm2-135m] [--uploads 16]

One emulator (uniform, alpha 0.5, 2+2 adapter blocks) is built once by a `serve` with one worker; each
source then runs as `scaleot-server serve` without a worker (one API process, default settings) on a
copy of that data directory, with this virtual environment (PYTHONPATH selects the source). A first
upload warms the server (the base model loaded, one plugged model cached), then N uploads of the same
full-block adapter are sent at once while /healthz is asked every 50 ms. Measured: the API's RSS before,
its peak (`VmHWM` reset through /proc/PID/clear_refs, cross-checked by sampling `VmRSS` every 20 ms)
and after; the statuses; the seconds until the last answer; /healthz latencies (max, p95, median).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import torch
from safetensors.torch import save

from benchmarks.service_load.eval_upload_rss import free_port, status_kb
from benchmarks.service_load.local_server import CLI, stop_server, wait_until_healthy
from model_owner_server.adapter_checks import expected_full_tensors
from model_owner_server.base_models import load_base_model
from shared.manifest import EmulatorManifest

ROOT = Path(__file__).resolve().parents[2]
SPEC = {"method": "uniform", "alpha": 0.5, "adapter_bottom": 2, "adapter_top": 2}


class Server:
    """`serve` on loopback for `source` over `data_dir`, with the admin key; stopped on exit."""

    def __init__(self, source: Path, data_dir: Path, model: str, admin: str, workers: int) -> None:
        env = {**os.environ, "PYTHONPATH": str(source), "SCALEOT_DATA_DIR": str(data_dir), "SCALEOT_ADMIN_KEY": admin,
               "SCALEOT_WORKERS_WITH_SERVE": str(workers), "SCALEOT_MODELS": json.dumps([model])}
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = data_dir.parent / f"server-{data_dir.name}.log"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([*CLI, "serve", "--host", "127.0.0.1", "--port", self.url.rsplit(":", 1)[1]],
                                         cwd=source, env=env, stdout=log, stderr=log)

    def __enter__(self) -> Server:
        if not wait_until_healthy(self.url, self.proc):
            stop_server(self.proc)
            raise RuntimeError(self.log.read_text()[-2000:])
        return self

    def __exit__(self, *_: object) -> None:
        stop_server(self.proc)


def build_emulator(data_dir: Path, model: str, admin: str) -> tuple[str, str, bytes]:
    """(owner key, emulator id, a full-block adapter for it), built by the current tree's worker."""
    with Server(ROOT, data_dir, model, admin, workers=1) as server:
        key = httpx.post(f"{server.url}/v1/owners", json={"name": "probe-load"},
                         headers={"Authorization": f"Bearer {admin}"}).json()["api_key"]
        auth = {"Authorization": f"Bearer {key}"}
        emulator_id = httpx.post(f"{server.url}/v1/emulators", json={"base_model": model, **SPEC},
                                 headers=auth).json()["id"]
        deadline = time.monotonic() + 600
        while (emulator := httpx.get(f"{server.url}/v1/emulators/{emulator_id}", headers=auth).json())[
                "status"]["state"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, "the emulator build timed out"
            time.sleep(0.5)
        assert emulator["status"]["state"] == "succeeded", emulator["status"]
        entry = next(e for e in emulator["files"] if e["name"] == "manifest.json")
        manifest = EmulatorManifest.model_validate_json(httpx.get(f"{server.url}{entry['url']}", headers=auth).content)
    base = load_base_model(model)
    original = base.model.state_dict()
    generator = torch.Generator().manual_seed(1)
    state = {k: original[k] + 0.01 * torch.randn(original[k].shape, generator=generator)
             for k in expected_full_tensors(base, manifest)}
    return key, emulator_id, save(state, metadata={"emulator_id": emulator_id})


def upload(url: str, key: str, emulator_id: str, data: bytes) -> int:
    files = [("file", ("adapter.safetensors", io.BytesIO(data), "application/octet-stream"))]
    return httpx.post(f"{url}/v1/adapters", data={"emulator_id": emulator_id}, files=files, timeout=600,
                      headers={"Authorization": f"Bearer {key}"}).status_code


def measure(source: Path, data_dir: Path, model: str, admin: str, key: str, emulator_id: str, data: bytes,
            uploads: int) -> dict[str, Any]:
    with Server(source, data_dir, model, admin, workers=0) as server:
        assert upload(server.url, key, emulator_id, data) == 201  # warm: base model loaded, one plugged cached
        pid = server.proc.pid
        time.sleep(1.0)
        before_kb = status_kb(pid, "VmRSS")
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        rss: list[int] = []
        health: list[float] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                rss.append(status_kb(pid, "VmRSS"))
                time.sleep(0.02)

        def probe_health() -> None:
            with httpx.Client(timeout=120) as client:
                while not stop.is_set():
                    started = time.monotonic()
                    client.get(f"{server.url}/healthz").raise_for_status()
                    health.append(time.monotonic() - started)
                    time.sleep(0.05)

        watchers = [threading.Thread(target=sample, daemon=True), threading.Thread(target=probe_health, daemon=True)]
        for watcher in watchers:
            watcher.start()
        started = time.monotonic()
        with ThreadPoolExecutor(uploads) as senders:
            statuses = list(senders.map(lambda _: upload(server.url, key, emulator_id, data), range(uploads)))
        seconds = time.monotonic() - started
        time.sleep(1.0)
        stop.set()
        for watcher in watchers:
            watcher.join()
        peak_kb = max(status_kb(pid, "VmHWM"), *rss)
        after_kb = status_kb(pid, "VmRSS")
    ordered = sorted(health)
    return {"statuses": {str(s): statuses.count(s) for s in sorted(set(statuses))}, "seconds": round(seconds, 1),
            "rss_before_mb": round(before_kb / 1024), "peak_rss_mb": round(peak_kb / 1024),
            "peak_growth_mb": round((peak_kb - before_kb) / 1024), "rss_after_mb": round(after_kb / 1024),
            "healthz_max_s": round(ordered[-1], 3), "healthz_p95_s": round(ordered[int(0.95 * (len(ordered) - 1))], 3),
            "healthz_median_s": round(statistics.median(ordered), 3), "healthz_requests": len(ordered)}


def write_report(out: Path, command: str, model: str, uploads: int, runs: dict[str, dict[str, Any]]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": command, "model": model, "uploads": uploads, "runs": runs}, indent=2) + "\n")
    lines = [f"# API under {uploads} concurrent adapter uploads ({model})", "", f"`{command}`", "",
             "| source | statuses | seconds | RSS before (MB) | peak (MB) | after (MB) "
             "| /healthz max / p95 / median (s) |",
             "|---|---|---|---|---|---|---|"]
    for source, row in runs.items():
        lines.append(f"| {source} | {row['statuses']} | {row['seconds']} | {row['rss_before_mb']} "
                     f"| {row['peak_rss_mb']} (+{row['peak_growth_mb']}) | {row['rss_after_mb']} "
                     f"| {row['healthz_max_s']} / {row['healthz_p95_s']} / {row['healthz_median_s']} |")
    lines += ["", "One API process with default settings (4 API threads; after: 1 probe at a time, 16 may wait), "
              "no worker, "
              "on loopback. RSS before: after a warm-up upload, so the base model is loaded (before: plus the one "
              "full copy its probe left in the plugged-model cache). Peak: VmHWM reset before the burst, and VmRSS "
              "sampled every 20 ms. /healthz asked every 50 ms from its own client during the burst."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--before", help="an older commit to measure too (checked out in a temporary clone)")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--uploads", type=int, default=16)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "upload-probes.json")
    args = parser.parse_args()
    command = (f"python -m benchmarks.service_load.upload_probes --model {args.model} --uploads {args.uploads}"
               + (f" --before {args.before}" if args.before else ""))
    admin = secrets.token_urlsafe(24)
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="scaleot-probe-load-") as tmp:
        built = Path(tmp) / "built"
        key, emulator_id, data = build_emulator(built, args.model, admin)
        sources: list[tuple[str, Path]] = []
        if args.before:
            src = Path(tmp) / "src"
            subprocess.run(["git", "clone", "-q", "--no-checkout", str(ROOT), str(src)], check=True)
            subprocess.run(["git", "-C", str(src), "checkout", "-q", args.before], check=True)
            sources.append((f"before ({args.before})", src))
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        sources.append((f"after ({head} + working tree)", ROOT))
        for index, (name, source) in enumerate(sources):
            data_dir = Path(tmp) / f"run{index}"
            shutil.copytree(built, data_dir)
            runs[name] = measure(source, data_dir, args.model, admin, key, emulator_id, data, args.uploads)
            print(name, runs[name], flush=True)
    write_report(args.out, command, args.model, args.uploads, runs)
    print(f"written {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
