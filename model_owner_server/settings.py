"""Service settings from `SCALEOT_*` environment variables (pydantic-settings).

Every knob a deployment needs is here, with its default for the embedded single-machine setup:
SQLite (WAL) + a local artifact directory under `SCALEOT_DATA_DIR`, one worker beside the API.
Outside `SCALEOT_ENVIRONMENT=development` a missing or default admin key is refused at start-up.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from model_owner_server.emulators.profile import Stage1Config, parse_stage1_overrides
from model_owner_server.recommendation.frontier_file import FrontierFile, load_frontier
from shared.precision import DtypeName, parse_dtype

DEFAULT_ADMIN_KEY = "change-me"
# Only real models by default; the tiny random test models (tiny-llama, ...) are served when named in SCALEOT_MODELS.
DEFAULT_MODELS = ["smollm2-135m"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SCALEOT_", env_file=".env", extra="ignore")

    environment: Literal["development", "production"] = Field(
        "production", description="development tolerates the default admin key; production refuses it"
    )
    data_dir: Path = Field(Path("scaleot-data"), description="artifacts (local store) and the SQLite database")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite:///<data_dir>/scaleot.db (WAL). postgresql+psycopg://..."
    )
    admin_key: str = Field(DEFAULT_ADMIN_KEY, description="the model owner's admin API key (>= 16 chars)")
    max_upload_bytes: int = Field(2 * 1024**3, ge=1, description="cap on one multipart body (adapter, JSONL)")
    max_header_bytes: int = Field(64 * 1024, ge=4096, le=16 * 1024**2, description="`serve`: a request line + "
                                  "headers larger than this is answered 431 before more is buffered")
    header_timeout_s: float = Field(30.0, gt=0, le=3600, description="`serve`: a request head not complete this "
                                    "long after its connection opened (or the previous response) is answered 408")
    max_json_bytes: int = Field(256 * 1024, ge=1024, le=64 * 1024**2,
                                description="cap on any other request body (JSON); read only after authentication")
    auth_cache_s: float = Field(5.0, ge=0, le=300,
                                description="seconds an accepted API key is remembered per API process (0: check the "
                                "database on every request); a key revoked elsewhere keeps working that long, which "
                                "`keys revoke` waits out before it returns")
    models: list[str] = Field(default_factory=lambda: list(DEFAULT_MODELS),
                              description="base models served (JSON list); tiny random test models only when named")
    frontiers: dict[str, Path] = Field(
        default_factory=dict, description="per served model, its measured privacy-utility frontier (JSON object: "
        'model -> the JSON `scaleot-server bench frontier` writes), e.g. {"smollm2-135m": '
        '"results/frontier-smollm2-135m.json"}; GET /v1/models/{name}/recommendation reads it')
    db_busy_timeout_s: float = Field(30.0, gt=0, le=3600, description="SQLite: how long a write waits for another "
                                     "connection's write lock before the API answers 503 (Retry-After) and a "
                                     "job's write is retried")
    db_retry_s: float = Field(300.0, ge=0, description="how long a job and its heartbeats retry a database that is "
                              "locked or unreachable (a restart, a failover) before the job is given back to the "
                              "queue; a transient outage never fails a job")
    worker_poll_s: float = Field(1.0, gt=0, description="worker sleep when the queue is empty")
    lease_s: float = Field(60.0, gt=0, description="a running job whose lease is older than this is recovered")
    heartbeat_s: float = Field(10.0, gt=0, description="how often a worker renews its lease")
    max_attempts: int = Field(2, ge=1, description="runs of a job before an orphaned job is failed")
    plugged_cache_size: int = Field(2, ge=1, description="plugged full models kept in memory (LRU)")
    base_cache_size: int = Field(2, ge=1, description="base models kept loaded in one process (LRU)")
    stage1: dict[str, Any] = Field(
        default_factory=dict, description="stage-1 overrides as one JSON object of Stage1Config fields, e.g. "
        '{"steps": 150, "batch_size": 2} (part of the profile and emulator ids); unset: the measured defaults')
    stage1_nproc: int = Field(1, ge=1, description="processes of stage 1; > 1 runs it under torchrun (DDP) as a "
                              "subprocess of the worker; the stage-1 batch size must divide by it")
    stage1_device: Literal["cpu", "cuda"] = Field("cpu", description="device of the stage-1 subprocess ranks "
                                                  "(cuda: one GPU per rank, nccl); in-process stage 1 uses the CPU")
    dtype: DtypeName = Field(
        "float32", description="weights of base models, emulator artifacts and generation: bfloat16 halves their "
        "memory (stage 1 and tuning keep float32 master copies of what they train); float16 needs a GPU")
    eval_limit: int = Field(200, ge=1, description="default cap on test examples of a built-in task")
    generate_max_new_tokens: int = Field(256, ge=1, description="upper bound on max_new_tokens")
    # serving (generation, the OpenAI-compatible API): one shared base per model, adapters batched together
    serve_device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where generation runs: auto = the "
                                                          "first GPU when there is one, else the CPU")
    serve_max_adapter_mb: float = Field(1024.0, gt=0, description="MiB of adapter weights kept loaded for serving "
                                        "(least recently used evicted past it; adapters of running requests stay)")
    serve_max_batch: int = Field(16, ge=1, le=1024, description="requests decoded together per served model")
    serve_queue: int = Field(64, ge=0, le=100_000, description="requests that may wait for a batch slot per served "
                             "model; past that a generation answers 503 with Retry-After")
    serve_retry_after_s: int = Field(2, ge=1, le=3600, description="Retry-After of a 503 for a full queue")
    workers_with_serve: int = Field(1, ge=0, description="worker processes `serve` starts beside the API")
    api_processes: int = Field(1, ge=1, description="uvicorn processes of the API (each holds its own model caches)")
    api_threads: int = Field(4, ge=2, le=256, description="threads each API process runs blocking work on (anyio's "
                             "default is 40): on a few cores, fewer threads take requests in turn instead of "
                             "contending for the GIL, which keeps the tail latency of metadata reads low")
    generation_concurrency: int = Field(2, ge=1, le=255, description="generations running at once per API process "
                                        "(each holds a thread for seconds; the others wait without one); must be "
                                        "below SCALEOT_API_THREADS so status reads keep a thread")
    probe_concurrency: int = Field(1, ge=1, le=64, description="adapter upload probes running at once per API "
                                   "process, each on a probe thread (never an API thread): a probe runs the full "
                                   "model on ten short texts, so more at once only contend for the same cores")
    probe_queue: int = Field(16, ge=0, le=1024, description="uploads that may wait for a probe (holding no thread, "
                             "only their files on disk); past that an upload answers 503 with Retry-After")
    # per data owner (the admin key is exempt); past one, a request is refused with 429 and Retry-After
    quota_active_jobs: int = Field(4, ge=0, description="queued or running jobs (emulator builds, evaluations, "
                                   "agreement checks) one data owner may have at once (0: no limit)")
    quota_builds_per_day: int = Field(20, ge=0, description="emulator builds one data owner may start in any 24 h "
                                      "(a request answered by an existing or equivalent emulator starts none; "
                                      "0: no limit)")
    quota_stored_mb: int = Field(5120, ge=0, description="MiB one data owner may store: adapters, evaluation "
                                 "uploads, agreement-check prompts and prompt sets (0: no limit)")
    storage: Literal["local", "s3"] = Field(
        "local", description="where artifacts live: local (<data_dir>/artifacts) or s3 (an S3-compatible bucket)"
    )
    s3_bucket: str | None = Field(None, description="bucket for storage=s3 (must exist); credentials come from the "
                                  "standard AWS chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, a role")
    s3_prefix: str = Field("", description="key prefix inside the bucket (several deployments can share one bucket)")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, Ceph RGW...); unset: AWS")
    s3_region: str | None = Field(None, description="bucket region; unset: AWS_REGION/AWS_DEFAULT_REGION or us-east-1")

    @model_validator(mode="after")
    def _refuse_default_secret(self) -> Settings:
        if self.environment != "development" and (self.admin_key == DEFAULT_ADMIN_KEY or len(self.admin_key) < 16):
            raise ValueError(
                "SCALEOT_ADMIN_KEY is missing, the default, or shorter than 16 characters; set a random key, e.g. "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'` (or SCALEOT_ENVIRONMENT=development)"
            )
        if self.heartbeat_s >= self.lease_s:
            raise ValueError(f"SCALEOT_HEARTBEAT_S ({self.heartbeat_s}) must be shorter than SCALEOT_LEASE_S "
                             f"({self.lease_s}), or running jobs are taken for orphans")
        return self

    @model_validator(mode="after")
    def _stage1_overrides_are_stage1_settings(self) -> Settings:
        legacy = sorted(f"SCALEOT_STAGE1_{name.upper()}" for name in Stage1Config.model_fields
                        if f"SCALEOT_STAGE1_{name.upper()}" in os.environ)
        if legacy:
            raise ValueError(f"{', '.join(legacy)} no longer read: put stage-1 settings in one JSON object, e.g. "
                             'SCALEOT_STAGE1=\'{"steps": 150, "batch_size": 2}\'')
        parse_stage1_overrides(self.stage1)
        return self

    @model_validator(mode="after")
    def _generation_leaves_threads(self) -> Settings:
        if self.generation_concurrency >= self.api_threads:
            raise ValueError(f"SCALEOT_GENERATION_CONCURRENCY ({self.generation_concurrency}) must be below "
                             f"SCALEOT_API_THREADS ({self.api_threads}), or generations can take every API thread")
        return self

    @model_validator(mode="after")
    def _float16_needs_a_gpu(self) -> Settings:
        if self.dtype == "float16":  # base models, emulators and generation run in the API/worker, on the CPU
            raise ValueError("SCALEOT_DTYPE=float16 needs a GPU, and this service runs base models, emulators and "
                             "generation on the CPU: use SCALEOT_DTYPE=bfloat16 (the same memory, float32's range)")
        return self

    @model_validator(mode="after")
    def _s3_needs_a_bucket(self) -> Settings:
        if self.storage == "s3" and not self.s3_bucket:
            raise ValueError("SCALEOT_STORAGE=s3 needs SCALEOT_S3_BUCKET (an existing bucket; credentials from "
                             "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the AWS credential chain)")
        return self

    @model_validator(mode="after")
    def _frontiers_are_of_served_models(self) -> Settings:
        for model in self.frontiers:
            if model not in self.models:
                raise ValueError(f"SCALEOT_FRONTIERS names {model!r}, which is not in SCALEOT_MODELS {self.models}")
        return self

    def load_frontiers(self) -> dict[str, FrontierFile]:
        """SCALEOT_FRONTIERS' files, read and checked (the API process; `serve` checks them before it starts, so
        a worker or an admin command does not depend on them); ValueError with one line naming what to fix."""
        loaded = {}
        for model, path in self.frontiers.items():
            try:
                frontier = load_frontier(path)
            except OSError as exc:
                raise ValueError(f"SCALEOT_FRONTIERS[{model!r}]: cannot read {path} ({exc.strerror or exc})") from None
            except ValueError as exc:
                raise ValueError(f"SCALEOT_FRONTIERS[{model!r}]: {exc}") from None
            measured = frontier.model
            if measured is not None and Path(str(measured)).name != Path(model).name:
                raise ValueError(f"SCALEOT_FRONTIERS[{model!r}]: {path} was measured on {measured!r}, not {model!r}")
            loaded[model] = frontier
        return loaded

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'scaleot.db').resolve()}"

    @property
    def torch_dtype(self) -> torch.dtype:
        return parse_dtype(self.dtype)

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"


@lru_cache
def get_settings() -> Settings:
    return Settings()
