"""Agreement checks: before tuning, how often an emulator answers the data owner's unlabelled prompts as
the full model does, and whether adapters tuned on it are likely to transfer. Upload (multipart), status,
list, cancel. Only aggregates come back, never the full model's answer to a prompt."""

from __future__ import annotations

from typing import Any

from fastapi import Request as HttpRequest
from fastapi import Response, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import bindparam
from sqlmodel import Session, col, select

from model_owner_server.app.api.deps import PrincipalDep, ReadSessionDep, SessionDep, StateDep
from model_owner_server.app.api.multipart import parse_multipart
from model_owner_server.app.api.routing import answer, api_router
from model_owner_server.app.api.workdir import request_workdir
from model_owner_server.app.services import agreements as service
from model_owner_server.app.services.access import visible_agreement
from model_owner_server.app.services.evaluations import cancel_job
from model_owner_server.app.services.prompt_sets import check_fields
from model_owner_server.app.services.views import agreement_out
from model_owner_server.db.models import AgreementCheck
from shared.api import AgreementList, AgreementOut

emulator_router = api_router(prefix="/v1/emulators", tags=["agreement"])
router = api_router(prefix="/v1/agreements", tags=["agreement"])

UPLOAD_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {"file": {"type": "string", "format": "binary",
                            "description": 'JSONL rows {"context": str, "choices": [str, ...]}; no label or target'}},
}}}}}


@emulator_router.post("/{emulator_id}/agreement", response_model=AgreementOut, status_code=status.HTTP_202_ACCEPTED,
                      openapi_extra=UPLOAD_BODY,
                      summary="Check, before tuning, whether an emulator answers your prompts as the full model does",
                      responses={400: {"description": "not multipart"}, 404: {"description": "unknown emulator"},
                                 409: {"description": "emulator not built"},
                                 413: {"description": "over the upload cap"},
                                 422: {"description": "every problem with the prompt file, at once"}})
async def check_agreement(emulator_id: str, request: HttpRequest, state: StateDep,
                          principal: PrincipalDep) -> AgreementOut:
    with request_workdir(state, "agreement-") as work:
        form = await parse_multipart(request, work, state.settings.max_upload_bytes)
        files = [f for f in form.files if f.field == "file"]
        check_fields(form.fields, len(files), "agreement request")
        prompts = await run_in_threadpool(service.read_prompts, files[0].path, files[0].filename)

        def create() -> AgreementOut:
            with Session(state.engine, expire_on_commit=False) as session:
                row = service.create_check(session, state, principal, emulator_id, prompts, files[0].path)
                return agreement_out(session, row)

        return await run_in_threadpool(create)


_ALL = select(AgreementCheck).order_by(col(AgreementCheck.created_at).desc())
_OWN = _ALL.where(col(AgreementCheck.owner_id) == bindparam("owner_id"))


@router.get("", response_model=AgreementList, summary="Your agreement checks (admin: all)")
def list_checks(session: ReadSessionDep, principal: PrincipalDep) -> Response:
    rows = session.exec(_ALL) if principal.is_admin else session.exec(_OWN, params={"owner_id": principal.owner_id})
    return answer(AgreementList(items=[agreement_out(session, row) for row in rows.all()]))


@router.get("/{check_id}", response_model=AgreementOut, summary="State and the agreement verdict",
            responses={404: {"description": "unknown, or another owner's"}})
def get_check(check_id: str, session: ReadSessionDep, principal: PrincipalDep) -> Response:
    return answer(agreement_out(session, visible_agreement(session, principal, check_id)))


@router.post("/{check_id}/cancel", response_model=AgreementOut, status_code=status.HTTP_202_ACCEPTED,
             summary="Cancel a queued or running agreement check",
             responses={404: {"description": "not found"}, 409: {"description": "already finished"}})
def cancel_check(check_id: str, state: StateDep, session: SessionDep, principal: PrincipalDep) -> AgreementOut:
    row = visible_agreement(session, principal, check_id)
    cancel_job(state, row)
    session.expire_all()
    return agreement_out(session, row)
