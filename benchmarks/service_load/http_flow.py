"""The whole offsite-tuning flow over HTTP against a real `scaleot-server serve`, timed step by step:
request emulator -> download (sha256-verified) -> tune the adapter locally -> upload -> evaluation
matrix -> generation. With the real SmolLM2 this is the demonstration of issue 4.

`scaleot-server bench flow --model smollm2-135m` (uses the cached stage-1 profile when there is one).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.service_load.http_load import LocalServer, request_emulator
from data_owner_client.tuning.config import TuningConfig
from data_owner_client.tuning.local import train_adapter
from shared.artifacts import verify_emulator
from shared.job_outcomes import FINISHED


def wait_evaluation(client: httpx.Client, evaluation_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = client.get(f"/v1/evaluations/{evaluation_id}").json()
        if body["status"]["state"] in FINISHED or time.monotonic() > deadline:
            return body
        time.sleep(1.0)


def run_flow(model: str, method: str, task: str, n_train: int, n_test: int, tuning: TuningConfig, work: Path,
             port: int, prompt: str) -> dict[str, Any]:
    from shared.tasks import as_training_examples, load_task

    timings: dict[str, float] = {}
    server = LocalServer(work / "data", port, [model])
    try:
        headers = {"Authorization": f"Bearer {server.owner_key()}"}
        client = httpx.Client(base_url=server.url, headers=headers, timeout=600)
        started = time.perf_counter()
        spec = {"base_model": model, "method": method, "alpha": 0.5, "beta": 0.0}
        emulator = request_emulator(server.url, headers, spec, timeout=3600)
        timings["emulator_build_s"] = time.perf_counter() - started

        started = time.perf_counter()
        emu_dir = work / "emulator"
        emu_dir.mkdir(parents=True, exist_ok=True)
        for entry in emulator["files"]:
            with client.stream("GET", entry["url"]) as response, (emu_dir / entry["name"]).open("wb") as out:
                response.raise_for_status()
                for chunk in response.iter_raw(1 << 20):
                    out.write(chunk)
        verify_emulator(emu_dir)  # every sha256 of the manifest
        timings["download_and_verify_s"] = time.perf_counter() - started

        started = time.perf_counter()
        data = load_task(task)
        train = as_training_examples(data.train[:n_train])  # type: ignore[arg-type]
        train_adapter(emu_dir, train, None, tuning, work / "adapter")
        timings["local_tuning_s"] = time.perf_counter() - started

        started = time.perf_counter()
        files = [("file", (p.name, p.read_bytes())) for p in sorted((work / "adapter").iterdir())]
        adapter = client.post("/v1/adapters", data={"emulator_id": emulator["id"]}, files=files)
        adapter.raise_for_status()
        adapter_id = adapter.json()["id"]
        timings["upload_s"] = time.perf_counter() - started

        started = time.perf_counter()
        created = client.post("/v1/evaluations", json={"adapter_id": adapter_id, "task": task, "limit": n_test})
        created.raise_for_status()
        evaluation = wait_evaluation(client, created.json()["id"], timeout=3600)
        timings["evaluation_s"] = time.perf_counter() - started

        generations = []
        for chat in (False, False, True):  # the second call reuses the plugged model from the LRU cache
            out = client.post(f"/v1/adapters/{adapter_id}/generate",
                              json={"prompt": prompt, "max_new_tokens": 24, "chat": chat})
            out.raise_for_status()
            generations.append({**out.json(), "chat": chat})
        client.close()
    finally:
        server.stop()
    return {"model": model, "method": method, "task": task, "n_train": n_train, "n_test": n_test,
            "emulator_id": emulator["id"], "emulator_layers": emulator["manifest"]["layers"],
            "emulator_mb": sum(f["size"] for f in emulator["files"]) / 1e6, "adapter_id": adapter_id,
            "evaluation": evaluation, "generations": generations, "timings": timings}


def markdown(result: dict[str, Any]) -> str:
    matrix = result["evaluation"].get("result") or {}
    lines = [f"Flow over HTTP: {result['model']} {result['method']} emulator {result['emulator_id']} "
             f"({result['emulator_mb']:.0f} MB), task {result['task']} ({result['n_train']} train / "
             f"{result['n_test']} test)", "", "| row | acc | acc_norm |", "|---|---|---|"]
    for name, row in matrix.get("rows", {}).items():
        lines.append(f"| {name} | {100 * row['value']:.1f} | {100 * (row.get('acc_norm') or 0):.1f} |")
    lines += ["", f"privacy gap (plug-in - emulator fine-tuned): {matrix.get('privacy_gap')}",
              f"evaluation state: {result['evaluation']['status']['state']} {result['evaluation']['status']['error']}",
              "", "| step | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in result["timings"].items()]
    for g in result["generations"]:
        lines.append(f"\ngenerate ({g['seconds']:.2f} s, cached model: {g['cached_model']}, chat: {g['chat']}): "
                     f"{json.dumps(g['prompt'] + g['completion'])}")
    return "\n".join(lines)
