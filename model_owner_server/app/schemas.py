"""Wire schemas of the REST API (requests and responses), with OpenAPI examples."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from model_owner_server.evaluation.matrix import EvaluationMatrix
from shared.manifest import EmulatorManifest, FileEntry


class Health(BaseModel):
    status: str = "ok"
    database: str
    schema_revision: str | None


class ModelInfo(BaseModel):
    name: str
    kind: str
    prepared: bool
    description: str


class JobStatus(BaseModel):
    job_id: str | None
    state: str = Field(description="queued | running | succeeded | failed | cancelled")
    progress: float = Field(0.0, ge=0, le=1)
    message: str = ""
    error: str | None = None
    attempts: int = 0
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None


class EmulatorFile(BaseModel):
    name: str
    size: int
    sha256: str | None = Field(description="from the manifest (None for manifest.json itself)")
    url: str


class EmulatorOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "emu-3f2a9c0d1e4b5a6c7d8e", "base_model": "smollm2-135m", "method": "scaleot",
        "spec": {"base_model": "smollm2-135m", "method": "scaleot", "adapter_bottom": 2, "adapter_top": 2,
                 "alpha": 0.5, "beta": 0.0},
        "state": "running", "progress": 0.42, "error": None,
        "status": {"job_id": "job-1a2b3c4d5e6f7a8b", "state": "running", "progress": 0.42,
                   "message": "stage 1 step 84/200"},
        "manifest": None, "files": [], "created_at": 1760000000.0}]})

    id: str
    base_model: str
    method: str
    spec: dict[str, Any]
    state: str = Field(description="queued | running | succeeded | failed | cancelled (= status.state)")
    progress: float = Field(0.0, description="0..1 (= status.progress)")
    error: str | None = Field(None, description="why it failed (= status.error)")
    status: JobStatus
    manifest: EmulatorManifest | None = None
    files: list[EmulatorFile] = Field(default_factory=list, description="downloadable once succeeded")
    created_at: float


class EmulatorList(BaseModel):
    items: list[EmulatorOut]


class AdapterOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "ada-0f1e2d3c4b5a6978", "emulator_id": "emu-3f2a9c0d1e4b5a6c7d8e", "kind": "full",
        "files": {"adapter.safetensors": {"sha256": "ab12...", "size": 28311552}}, "size": 28311552,
        "created_at": 1760000000.0}]})

    id: str
    emulator_id: str
    kind: str = Field(description="full (adapter.safetensors) or lora (PEFT directory)")
    files: dict[str, FileEntry]
    size: int
    created_at: float


class AdapterList(BaseModel):
    items: list[AdapterOut]


class EvaluationRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"adapter_id": "ada-0f1e2d3c4b5a6978", "task": "winowhy", "limit": 200}]},
    )

    adapter_id: str
    task: str = Field(description="a built-in task name (GET /v1/tasks)")
    limit: int | None = Field(None, ge=1, description="evaluate on the first N test examples (default: a server cap)")


class EvaluationOut(BaseModel):
    id: str
    adapter_id: str
    task: str
    source: str = Field(description="builtin or upload (a multiple-choice JSONL sent with the request)")
    limit: int | None
    state: str = Field(description="queued | running | succeeded | failed | cancelled (= status.state)")
    progress: float = Field(0.0, description="0..1 (= status.progress)")
    error: str | None = Field(None, description="why it failed (= status.error)")
    status: JobStatus
    result: EvaluationMatrix | None = None
    created_at: float


class EvaluationList(BaseModel):
    items: list[EvaluationOut]


class TaskInfo(BaseModel):
    name: str
    kind: str
    description: str


class GenerateRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"prompt": "The capital of France is", "max_new_tokens": 32,
                                         "temperature": 0.0}]},
    )

    prompt: str = Field(min_length=1, max_length=20_000)
    max_new_tokens: int = Field(32, ge=1, description="capped by SCALEOT_GENERATE_MAX_NEW_TOKENS")
    temperature: float = Field(0.0, ge=0.0, le=5.0, description="0 = greedy decoding")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = Field(None, description="sampling seed (temperature > 0)")
    chat: bool = Field(False, description="wrap the prompt in the tokenizer's chat template (instruct models)")


class GenerateOut(BaseModel):
    adapter_id: str
    prompt: str
    completion: str
    new_tokens: int
    seconds: float
    cached_model: bool = Field(description="whether the plugged model came from the LRU cache")


class OwnerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "hospital-a"}]})

    name: str = Field(min_length=1, max_length=120, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class OwnerKey(BaseModel):
    owner_id: str
    name: str
    key_id: str
    api_key: str = Field(description="shown once; only its sha256 is stored")


class OwnerOut(BaseModel):
    id: str
    name: str
    created_at: float
    keys: int
