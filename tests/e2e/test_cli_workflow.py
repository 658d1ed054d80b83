"""End to end: a real `scaleot-server serve` on loopback and the real `scaleot` CLI (subprocesses)
running the data owner's whole workflow on a tiny model, with an interrupted and resumed download
and a rejected bad adapter."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

import data_owner_client.download as download_module
from data_owner_client.client import ScaleOTClient
from data_owner_client.download import DownloadProgress
from tests.service.test_server import Server

SERVER_CLI = [sys.executable, "-c", "from model_owner_server.cli import app; app()"]
CLIENT_CLI = [sys.executable, "-c", "from data_owner_client.cli import app; app()"]
ADMIN_KEY = "e2e-admin-key-0123456789abcdef"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    values = dict(os.environ)
    values.update({
        "SCALEOT_DATA_DIR": str(tmp_path / "server"), "SCALEOT_ADMIN_KEY": ADMIN_KEY,
        "SCALEOT_MODELS": '["tiny-llama"]', "SCALEOT_WORKER_POLL_S": "0.2",
        "SCALEOT_STAGE1": '{"steps": 2, "batch_size": 2, "seq_len": 32, "harmonizer_rank": 8}',
        "SCALEOT_CONFIG_DIR": str(tmp_path / "client-config"), "SCALEOT_EVAL_LIMIT": "8",
    })
    values.pop("SCALEOT_URL", None)
    values.pop("SCALEOT_API_KEY", None)
    return values


@pytest.fixture
def server(env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    srv = Server(env, tmp_path / "server.log")
    srv.start()
    yield srv
    srv.stop()


def run(cmd: list[str], env: dict[str, str], *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=600, check=False)
    if ok:
        assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result


def scaleot_json(env: dict[str, str], *args: str) -> Any:
    return json.loads(run(CLIENT_CLI, env, *args, "--json").stdout)


def test_data_owner_workflow_through_the_cli(server: Server, env: dict[str, str], tmp_path: Path) -> None:
    created = run(SERVER_CLI, env, "keys", "create", "--owner", "alice")
    key = created.stdout.split()[-1]
    run(CLIENT_CLI, env, "config", "set", "--url", server.url, "--api-key", key)

    emulator = scaleot_json(env, "emulators", "request", "--model", "tiny-llama", "--method", "scaleot",
                            "--alpha", "0.5", "--adapter-bottom", "1", "--adapter-top", "1", "--wait")
    assert emulator["status"]["state"] == "succeeded", emulator
    emulator_id = emulator["id"]
    again = scaleot_json(env, "emulators", "request", "--model", "tiny-llama", "--method", "scaleot",
                         "--alpha", "0.5", "--adapter-bottom", "1", "--adapter-top", "1")
    assert again["id"] == emulator_id  # idempotent
    assert [e["id"] for e in scaleot_json(env, "emulators", "list")] == [emulator_id]

    # before tuning: the agreement check on unlabelled prompts (aggregates and a verdict only)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"context": f"Q{i}: the sky is", "choices": [" blue", " green"]}) + "\n"
                               for i in range(6)))
    checked = scaleot_json(env, "emulators", "check", emulator_id, "--data", str(prompts))
    assert checked["state"] == "succeeded" and checked["result"]["n_items"] == 6, checked
    assert "transfer for prompts like these" in checked["result"]["verdict"]
    human = run(CLIENT_CLI, env, "emulators", "check", emulator_id, "--data", str(prompts))
    assert "agreement" in human.stdout and "mean KL" in human.stdout
    labelled = tmp_path / "labelled.jsonl"
    labelled.write_text(json.dumps({"context": "Q", "choices": ["a", "b"], "label": 0}) + "\n")
    refused = run(CLIENT_CLI, env, "emulators", "check", emulator_id, "--data", str(labelled), ok=False)
    assert refused.returncode != 0 and "label" in refused.stderr and "Traceback" not in refused.stderr

    # a task-calibrated emulator: the prompts go up once, the emulator is refined on them in the worker
    prompts.write_text("".join(json.dumps({"context": f"Q{i}: the sky is", "choices": [" blue", " green"]}) + "\n"
                               for i in range(10)))
    calibrated = scaleot_json(env, "emulators", "request", "--model", "tiny-llama", "--method", "scaleot",
                              "--alpha", "0.5", "--adapter-bottom", "1", "--adapter-top", "1", "--calibrate",
                              str(prompts), "--wait")
    assert calibrated["state"] == "succeeded" and calibrated["id"] != emulator_id, calibrated
    assert calibrated["manifest"]["calibration"]["n_prompts"] + calibrated["manifest"]["calibration"]["n_check"] == 10

    # an interrupted download: stop after the first chunk of the weights file
    out = tmp_path / "emulator"
    original_chunk = download_module.CHUNK
    download_module.CHUNK = 4096

    def interrupt(p: DownloadProgress) -> None:
        if p.name == "emulator.safetensors" and p.done > 3 * 4096:
            raise KeyboardInterrupt

    try:
        with ScaleOTClient(server.url, key) as client, pytest.raises(KeyboardInterrupt):
            client.download_emulator(emulator_id, out, on_progress=interrupt)
    finally:
        download_module.CHUNK = original_chunk
    partial = tmp_path / ".emulator.partial" / "emulator.safetensors.part"
    assert partial.is_file() and not out.exists()
    done = scaleot_json(env, "emulators", "download", emulator_id, "--out", str(out))
    assert done["verified"] and done["resumed"]["emulator.safetensors"] >= 3 * 4096
    assert (out / "manifest.json").is_file() and not partial.exists()

    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"context": f"Q{i}: the sky is", "target": " blue"}) + "\n"
                             for i in range(16)))
    trained = scaleot_json(env, "train", "--emulator", str(out), "--data", str(train), "--out",
                           str(tmp_path / "adapter"), "--epochs", "1", "--lr", "1e-3")
    assert trained["steps"] == 2

    # a bad adapter (one tensor dropped, one poisoned with NaN) is rejected with every problem listed
    bad = tmp_path / "bad-adapter"
    shutil.copytree(tmp_path / "adapter", bad)
    state = load_file(bad / "adapter.safetensors")
    dropped, poisoned = sorted(state)[:2]
    del state[dropped]
    state[poisoned] = torch.full_like(state[poisoned], float("nan"))
    save_file(state, bad / "adapter.safetensors")
    rejected = run(CLIENT_CLI, env, "adapters", "upload", str(bad), ok=False)
    assert rejected.returncode == 1 and "422" in rejected.stderr and f"missing tensor {dropped}" in rejected.stderr

    adapter = scaleot_json(env, "adapters", "upload", str(tmp_path / "adapter"))
    assert adapter["emulator_id"] == emulator_id and adapter["kind"] == "full"
    assert [a["id"] for a in scaleot_json(env, "adapters", "list")] == [adapter["id"]]

    mc = tmp_path / "mc.jsonl"
    mc.write_text("".join(json.dumps({"context": f"Q{i}: the sky is", "choices": ["blue", "green"], "label": 0})
                          + "\n" for i in range(4)))
    evaluation = scaleot_json(env, "evals", "run", adapter["id"], "--data", str(mc))
    assert evaluation["status"]["state"] == "succeeded", evaluation
    rows = evaluation["result"]["rows"]
    assert set(rows) >= {"full_zero_shot", "emulator_zero_shot", "emulator_fine_tuned", "plug_in"}
    shown = run(CLIENT_CLI, env, "evals", "show", evaluation["id"])
    assert "plug-in" in shown.stdout and "privacy gap" in shown.stdout

    generated = scaleot_json(env, "generate", adapter["id"], "--prompt", "Q1: the sky is", "--max-new-tokens", "4")
    assert generated["new_tokens"] <= 4 and generated["prompt"] == "Q1: the sky is"


def test_cli_errors_are_one_line_with_exit_codes(server: Server, env: dict[str, str]) -> None:
    wrong = run(CLIENT_CLI, env, "emulators", "list", "--url", server.url, "--api-key", "not-a-key", ok=False)
    assert wrong.returncode == 1 and "401" in wrong.stderr and "api-key" in wrong.stderr
    assert "Traceback" not in wrong.stderr
    down = run(CLIENT_CLI, env, "emulators", "list", "--url", "http://127.0.0.1:9", "--api-key", "x", ok=False)
    assert down.returncode == 3 and "cannot reach" in down.stderr and "Traceback" not in down.stderr
    usage = run(CLIENT_CLI, env, "evals", "run", "ada-x", "--url", server.url, ok=False)
    assert usage.returncode == 2 and "exactly one of --task" in usage.stderr
