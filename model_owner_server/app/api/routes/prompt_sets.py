"""Prompt sets: upload a data owner's unlabelled prompts once, for task-calibrated emulators
(`POST /v1/emulators` with `calibration_prompts`). List and get your own; nobody else sees them."""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import bindparam
from sqlmodel import Session, col, select

from model_owner_server.app.api.deps import PrincipalDep, ReadSessionDep, StateDep
from model_owner_server.app.api.multipart import parse_multipart
from model_owner_server.app.api.routing import answer, api_router
from model_owner_server.app.api.workdir import request_workdir
from model_owner_server.app.services import prompt_sets as service
from model_owner_server.app.services.access import visible_prompt_set
from model_owner_server.app.services.views import prompt_set_out
from model_owner_server.db.models import PromptSet
from shared.api import PromptSetList, PromptSetOut

router = api_router(prefix="/v1/prompt-sets", tags=["calibration"])

UPLOAD_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {"file": {"type": "string", "format": "binary",
                            "description": 'JSONL rows {"context": str, "choices": [str, ...]} (choices optional); '
                                           "no label or target"}},
}}}}}


@router.post("", response_model=PromptSetOut, status_code=status.HTTP_201_CREATED, openapi_extra=UPLOAD_BODY,
             summary="Upload unlabelled prompts for a task-calibrated emulator",
             responses={400: {"description": "not multipart"}, 413: {"description": "over the upload cap"},
                        422: {"description": "every problem with the prompt file, at once"}})
async def upload_prompt_set(request: Request, state: StateDep, principal: PrincipalDep) -> PromptSetOut:
    with request_workdir(state, "prompts-") as work:
        form = await parse_multipart(request, work, state.settings.max_upload_bytes)
        files = [f for f in form.files if f.field == "file"]
        service.check_fields(form.fields, len(files), "prompt-set upload")

        def create() -> PromptSetOut:
            with Session(state.engine, expire_on_commit=False) as session:
                return prompt_set_out(service.create_prompt_set(session, state, principal, files[0].path,
                                                                files[0].filename))

        return await run_in_threadpool(create)


_ALL = select(PromptSet).order_by(col(PromptSet.created_at).desc())
_OWN = _ALL.where(col(PromptSet.owner_id) == bindparam("owner_id"))


@router.get("", response_model=PromptSetList, summary="Your prompt sets (admin: all)")
def list_prompt_sets(session: ReadSessionDep, principal: PrincipalDep) -> Response:
    rows = session.exec(_ALL) if principal.is_admin else session.exec(_OWN, params={"owner_id": principal.owner_id})
    return answer(PromptSetList(items=[prompt_set_out(row) for row in rows.all()]))


@router.get("/{set_id}", response_model=PromptSetOut, summary="One of your prompt sets",
            responses={404: {"description": "unknown, or another owner's"}})
def get_prompt_set(set_id: str, session: ReadSessionDep, principal: PrincipalDep) -> Response:
    return answer(prompt_set_out(visible_prompt_set(session, principal, set_id)))
