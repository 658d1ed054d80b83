"""Issue 11: a bounded fuzz of adapter uploads in the normal test run (the long one is
`python -m tests.fuzz.upload_fuzz --cases 3000`): mutated safetensors files and LoRA
directories are answered 201 or 4xx, never 5xx, and the service keeps answering."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from model_owner_server.jobs.worker import Worker
from model_owner_server.settings import Settings
from tests.fuzz.fuzz_seed import FULL_SPEC, LORA_SPEC, Seed, make_full_adapter, make_lora_files
from tests.fuzz.upload_fuzz import run_cases
from tests.fuzz.upload_mutations import SAFETENSORS_MUTATORS
from tests.service.conftest import Headers, build


def test_mutated_uploads_are_201_or_4xx(client: TestClient, worker: Worker, alice: Headers, settings: Settings,
                                        tmp_path: Path) -> None:
    full, lora = (build(client, worker, alice, spec)["id"] for spec in (FULL_SPEC, LORA_SPEC))
    artifacts = settings.data_dir / "artifacts" / "emulators"
    seeded = Seed(owner_key=alice["Authorization"].removeprefix("Bearer "), full_emulator=full, lora_emulator=lora,
                  adapter_id="", evaluation_id="", full_adapter=make_full_adapter(artifacts / full, tmp_path / "full"),
                  lora_files=make_lora_files(artifacts / lora, tmp_path / "lora"))
    result = run_cases(client, seeded, cases=160, rng_seed=11)
    assert result["not_201_or_4xx"] == [] and result["server_alive"]
    assert {"201", "422"} <= set(result["statuses"])  # some mutations stay valid, most are refused
    tried = {kind.removeprefix("full: ") for kind in result["by_mutation"]}
    assert set(SAFETENSORS_MUTATORS) <= tried and {"lora: config", "lora: file set"} <= tried
