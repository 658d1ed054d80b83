"""Jobs: the queue as the caller may see it (admin: every job; a data owner: the builds of its emulators and
its own evaluations and agreement checks), one job, a summary; cancel any job (admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Response, status

from model_owner_server.app.api.deps import AdminDep, PrincipalDep, ReadSessionDep, SessionDep, StateDep
from model_owner_server.app.api.routing import answer, api_router
from model_owner_server.app.services import jobs as service
from shared.api_jobs import MAX_PAGE, JobList, JobOut, QueueSummary

router = api_router(prefix="/v1/jobs", tags=["jobs"])
admin_router = api_router(prefix="/v1/jobs", tags=["jobs", "admin"])

LOG_NOTE = ("Jobs keep no log of their own: `message` is the latest progress line and `error` the reason of a "
            "failure; the model owner's server log has the details under the job id.")


@router.get("", response_model=JobList, summary="Jobs, newest first, paginated (admin: all; a data owner: its own)",
            description=LOG_NOTE)
def list_jobs(
    session: ReadSessionDep, principal: PrincipalDep,
    state: Annotated[str | None, Query(max_length=16, description="queued | running | succeeded | failed | "
                                       "cancelled")] = None,
    kind: Annotated[str | None, Query(max_length=32, description="emulator_build | evaluation | "
                                      "agreement_check")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> Response:
    return answer(service.list_jobs(session, principal, state, kind, limit, offset))


@router.get("/summary", response_model=QueueSummary,
            summary="Queue depth per state, workers holding a lease, recent failures")
def queue_summary(session: ReadSessionDep, principal: PrincipalDep) -> Response:
    return answer(service.summary(session, principal))


@router.get("/{job_id}", response_model=JobOut, summary="One job: state, progress, attempts, worker, timings",
            description=LOG_NOTE, responses={404: {"description": "unknown, or not one of yours"}})
def get_job(job_id: str, session: ReadSessionDep, principal: PrincipalDep) -> Response:
    return answer(service.job_out(service.visible_job(session, principal, job_id)))


@admin_router.post("/{job_id}/cancel", response_model=JobOut, status_code=status.HTTP_202_ACCEPTED,
                   summary="Cancel any queued or running job (admin)",
                   responses={404: {"description": "unknown job"}, 409: {"description": "already finished"}})
def cancel_job(job_id: str, state: StateDep, session: SessionDep, principal: AdminDep) -> JobOut:
    return service.cancel(session, state.engine, principal, job_id)
