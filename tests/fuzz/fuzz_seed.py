"""A real `scaleot-server serve` on loopback for the fuzzers, seeded with real objects.

The server runs without workers (the fuzzers must not start emulator builds that compete for the
cores); the seed emulators are built by one `scaleot-server worker --once` beforehand. The seed: a
data owner's key, a built tiny-gpt2 emulator with a valid full adapter, a built tiny-llama emulator
with a valid PEFT LoRA directory, one uploaded adapter and one queued evaluation.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file

from benchmarks.service_load.local_server import CLI, stop_server, wait_until_healthy
from model_owner_server.adapter_checks import expected_full_tensors
from model_owner_server.base_models import load_base_model
from shared.adapter_format import PEFT_WEIGHTS, save_adapter
from shared.artifacts import read_manifest

FULL_SPEC = {"base_model": "tiny-gpt2", "method": "uniform", "alpha": 0.5, "adapter_bottom": 1, "adapter_top": 1}
FRONTIER_MODEL = "tiny-gpt2"  # served with a measured-looking frontier, so the recommendation route answers too
LORA_SPEC = {"base_model": "tiny-llama", "method": "uniform", "alpha": 0.5, "adapter_bottom": 1, "adapter_top": 1}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class FuzzServer:
    """`scaleot-server serve` (no workers) in a subprocess with its own data directory and admin key."""

    root: Path
    settings: dict[str, str] = field(default_factory=dict)
    source: Path | None = None  # serve this checkout's code (PYTHONPATH and working directory) instead
    admin_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    def env(self) -> dict[str, str]:
        return {**os.environ, "SCALEOT_DATA_DIR": str(self.data_dir), "SCALEOT_ADMIN_KEY": self.admin_key,
                "SCALEOT_MODELS": json.dumps(["tiny-gpt2", "tiny-llama"]), "SCALEOT_WORKERS_WITH_SERVE": "0",
                "SCALEOT_GENERATE_MAX_NEW_TOKENS": "8", "SCALEOT_MAX_UPLOAD_BYTES": "4000000",
                "SCALEOT_EVAL_LIMIT": "4", **({"PYTHONPATH": str(self.source)} if self.source else {}),
                "SCALEOT_FRONTIERS": json.dumps({FRONTIER_MODEL: str(self.frontier_path)}), **self.settings}

    @property
    def frontier_path(self) -> Path:
        return self.root / "frontier.json"

    def write_frontier(self) -> None:
        """Three ScaleOT points on a made-up frontier (the shape `bench frontier` writes)."""
        def point(alpha: float, beta: float, privacy: float, utility: float) -> dict[str, Any]:
            return {"variant": f"scaleot (alpha {alpha:g}, beta {beta:g})", "method": "scaleot", "alpha": alpha,
                    "beta": beta, "privacy_gap": {"mean": privacy, "ci95": [privacy - 2, privacy + 2]},
                    "utility_gap": {"mean": utility, "ci95": [utility - 2, utility + 2]}, "plug_in": {"mean": 70.0}}

        self.frontier_path.write_text(json.dumps({
            "benchmark": "frontier", "model": FRONTIER_MODEL, "tasks": ["bbc_news"],
            "points": [point(0.25, 0.0, 1.0, 0.5), point(0.5, 0.0, 4.0, 2.0), point(0.5, 0.5, 8.0, 5.0)]}))

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.write_frontier()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([*CLI, "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                                         env=self.env(), stdout=log, stderr=log, cwd=self.source)
        if not wait_until_healthy(self.url, self.proc):
            self.stop()
            raise RuntimeError(f"server did not start; see {self.log_path}")

    def alive(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=10).status_code == 200
        except httpx.HTTPError:
            return False

    def run_worker_once(self) -> None:
        subprocess.run([*CLI, "worker", "--once"], env=self.env(), check=True, capture_output=True)

    def stop(self) -> None:
        if self.proc is not None:
            stop_server(self.proc)


@dataclass
class Seed:
    owner_key: str
    full_emulator: str
    lora_emulator: str
    adapter_id: str
    evaluation_id: str
    full_adapter: bytes  # a valid adapter.safetensors for full_emulator
    lora_files: dict[str, bytes]  # a valid PEFT directory for lora_emulator

    def ids(self) -> dict[str, Any]:
        return {"emulator_id": [self.full_emulator, self.lora_emulator], "adapter_id": [self.adapter_id],
                "evaluation_id": [self.evaluation_id], "name": [FRONTIER_MODEL]}  # name: of /v1/models/{name}/...


def make_full_adapter(emulator_dir: Path, out: Path) -> bytes:
    """The emulator's adapter blocks from the base model, slightly perturbed."""
    manifest = read_manifest(emulator_dir)
    base = load_base_model(manifest.base_model)
    original = base.model.state_dict()
    generator = torch.Generator().manual_seed(1)
    state = {k: original[k] + 0.05 * torch.randn(original[k].shape, generator=generator)
             for k in expected_full_tensors(base, manifest)}
    return save_adapter(state, manifest, out).read_bytes()


def make_lora_files(emulator_dir: Path, out: Path) -> dict[str, bytes]:
    """A PEFT LoRA directory on the emulator's adapter blocks, as PEFT writes it."""
    manifest = read_manifest(emulator_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                        layers_to_transform=manifest.adapter_indices())
    model = get_peft_model(load_base_model(manifest.base_model).model, config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    model.save_pretrained(str(out))
    save_file(load_file(out / PEFT_WEIGHTS), out / PEFT_WEIGHTS, metadata={"format": "pt",
                                                                         "emulator_id": manifest.emulator_id})
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


def seed(server: FuzzServer) -> Seed:
    admin = {"Authorization": f"Bearer {server.admin_key}"}
    with httpx.Client(base_url=server.url, timeout=120) as client:
        created = client.post("/v1/owners", json={"name": f"fuzz-{secrets.token_hex(3)}"}, headers=admin)
        created.raise_for_status()
        key = str(created.json()["api_key"])
        owner = {"Authorization": f"Bearer {key}"}
        ids = [client.post("/v1/emulators", json=spec, headers=owner).json()["id"] for spec in (FULL_SPEC, LORA_SPEC)]
        server.run_worker_once()
        artifacts = server.data_dir / "artifacts" / "emulators"
        full = make_full_adapter(artifacts / ids[0], server.root / "full-adapter")
        lora = make_lora_files(artifacts / ids[1], server.root / "lora-adapter")
        uploaded = client.post("/v1/adapters", data={"emulator_id": ids[0]},
                               files=[("file", ("adapter.safetensors", full))], headers=owner)
        uploaded.raise_for_status()
        adapter_id = str(uploaded.json()["id"])
        evaluation = client.post("/v1/evaluations", json={"adapter_id": adapter_id, "task": "winowhy"}, headers=owner)
        evaluation.raise_for_status()
    return Seed(key, ids[0], ids[1], adapter_id, str(evaluation.json()["id"]), full, lora)
