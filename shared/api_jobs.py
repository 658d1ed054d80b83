"""The jobs part of the REST contract (GET /v1/jobs): what the queue holds, as the model owner's
dashboard and a data owner's client read it. Times are float seconds since the epoch (UTC)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from shared.job_outcomes import JobState

MAX_PAGE = 200  # rows of one page of a list


class JobOut(BaseModel):
    id: str
    kind: str = Field(description="emulator_build | evaluation | agreement_check")
    subject_id: str = Field(description="the emulator, evaluation or agreement check the job works for")
    state: JobState
    progress: float = Field(ge=0, le=1)
    message: str = Field("", description="the job's latest progress line (jobs keep no log of their own: the "
                                         "model owner's server log has the details under the job id)")
    error: str | None = None
    attempts: int = Field(description="runs started so far")
    max_attempts: int
    cancel_requested: bool = False
    worker: str | None = Field(None, description="the worker holding the job while it runs")
    lease_expires_at: float | None = None
    created_at: float
    started_at: float | None = Field(None, description="start of the latest attempt")
    finished_at: float | None = None
    updated_at: float
    queued_s: float | None = Field(None, description="from creation to the latest start")
    run_s: float | None = Field(None, description="of the latest attempt: to its end, or to now while it runs")


class JobList(BaseModel):
    items: list[JobOut]
    total: int = Field(description="jobs matching the filters, over every page")
    limit: int
    offset: int


class QueueSummary(BaseModel):
    """How the queue stands, over every job the caller may see."""

    by_state: dict[str, int] = Field(description="job count per state")
    workers_alive: list[str] = Field(description="workers holding a running job with an unexpired lease (an idle "
                                                 "worker holds none and is not listed)")
    recent_failures: list[JobOut] = Field(description="the latest failed jobs, newest first")
