"""Tables (SQLModel). The schema itself is owned by the Alembic revisions in `migrations/versions`;
change a table here and add a revision there (`tests/service/test_migrations.py` compares them).

Timestamps are float seconds since the epoch (UTC): identical on SQLite and Postgres, and what the
lease arithmetic of the job queue needs.
"""

from __future__ import annotations

import time
from enum import StrEnum

from sqlmodel import Field, SQLModel

from shared.job_outcomes import FINISHED as FINISHED  # the wire's job states are also the column values
from shared.job_outcomes import JobState as JobState


def now() -> float:
    return time.time()




class JobKind(StrEnum):
    emulator_build = "emulator_build"
    evaluation = "evaluation"
    agreement_check = "agreement_check"


class Owner(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=40)
    name: str = Field(unique=True, index=True, max_length=120)
    created_at: float = Field(default_factory=now)


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_key"

    id: str = Field(primary_key=True, max_length=40)  # the key's public id (part of the key)
    owner_id: str = Field(foreign_key="owner.id", index=True, max_length=40)
    key_hash: str = Field(max_length=64)
    revoked: bool = False
    created_at: float = Field(default_factory=now)


class Job(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=40)
    kind: str = Field(max_length=32)
    subject_id: str = Field(index=True, max_length=40)  # emulator or evaluation id
    # the data owner whose request queued the job (None: the admin, or a job older than revision 0003): what the
    # per-owner quotas count; no foreign key, it only attributes work
    owner_id: str | None = Field(default=None, index=True, max_length=40)
    state: str = Field(default=JobState.queued, index=True, max_length=16)
    progress: float = 0.0
    message: str = Field(default="", max_length=500)
    error: str | None = Field(default=None, max_length=4000)
    attempts: int = 0
    max_attempts: int = 2
    cancel_requested: bool = False
    lease_owner: str | None = Field(default=None, max_length=80)
    lease_expires_at: float | None = None
    created_at: float = Field(default_factory=now)
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float = Field(default_factory=now)


class Emulator(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=40)  # = manifest emulator_id (content-derived)
    base_model: str = Field(max_length=400)
    method: str = Field(max_length=16)
    spec_json: str  # EmulatorSpec
    stage1_json: str | None = None  # Stage1Config when the method needs a profile
    job_id: str | None = Field(default=None, foreign_key="job.id", max_length=40)
    manifest_json: str | None = None
    # sha256 of the layer plan and all else that determines the weights (emulators/plan_key.py); equal plans
    # are one emulator, so a request whose plan exists is answered by it. None when the plan was not known
    # (a stage-1 profile not cached yet, or an emulator older than revision 0003)
    plan_sha256: str | None = Field(default=None, unique=True, index=True, max_length=64)
    created_at: float = Field(default_factory=now)


class EmulatorGrant(SQLModel, table=True):
    """Which data owners requested (and so may see and download) an emulator."""

    __tablename__ = "emulator_grant"

    emulator_id: str = Field(foreign_key="emulator.id", primary_key=True, max_length=40)
    owner_id: str = Field(foreign_key="owner.id", primary_key=True, max_length=40)
    created_at: float = Field(default_factory=now)


class Adapter(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=40)
    owner_id: str | None = Field(default=None, foreign_key="owner.id", index=True, max_length=40)
    emulator_id: str = Field(foreign_key="emulator.id", index=True, max_length=40)
    kind: str = Field(max_length=8)  # full | lora
    files_json: str  # {name: {"sha256", "size"}}
    size: int = 0
    created_at: float = Field(default_factory=now)


class Evaluation(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=40)
    owner_id: str | None = Field(default=None, foreign_key="owner.id", index=True, max_length=40)
    adapter_id: str = Field(foreign_key="adapter.id", index=True, max_length=40)
    task: str = Field(max_length=200)
    source: str = Field(default="builtin", max_length=16)  # builtin | upload
    example_limit: int | None = None
    stored_bytes: int = 0  # the uploaded JSONL kept in the store (the stored-bytes quota counts it)
    job_id: str | None = Field(default=None, foreign_key="job.id", max_length=40)
    result_json: str | None = None
    created_at: float = Field(default_factory=now)


class AgreementCheck(SQLModel, table=True):
    """A data owner's agreement check: how often an emulator answers its unlabelled prompts as the full model does."""

    __tablename__ = "agreement_check"

    id: str = Field(primary_key=True, max_length=40)
    owner_id: str | None = Field(default=None, foreign_key="owner.id", index=True, max_length=40)
    emulator_id: str = Field(foreign_key="emulator.id", index=True, max_length=40)
    n_prompts: int = 0
    prompts_sha256: str = Field(max_length=64)
    stored_bytes: int = 0  # the prompt file kept in the store (the stored-bytes quota counts it)
    job_id: str | None = Field(default=None, foreign_key="job.id", max_length=40)
    result_json: str | None = None
    created_at: float = Field(default_factory=now)


class PromptSet(SQLModel, table=True):
    """A data owner's unlabelled prompts for task calibration (stored in the artifact store, never shown to others)."""

    __tablename__ = "prompt_set"

    id: str = Field(primary_key=True, max_length=40)
    owner_id: str | None = Field(default=None, foreign_key="owner.id", index=True, max_length=40)
    sha256: str = Field(max_length=64)
    n_prompts: int = 0
    stored_bytes: int = 0  # the prompt file kept in the store (the stored-bytes quota counts it)
    created_at: float = Field(default_factory=now)
