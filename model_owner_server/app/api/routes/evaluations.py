"""Evaluations: POST a built-in task (JSON) or an uploaded multiple-choice JSONL (multipart) -> 202;
the worker computes the Offsite-Tuning matrix. Status, list, cancel."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from sqlmodel import Session, col, select

from model_owner_server.app.api.deps import PrincipalDep, ReadSessionDep, SessionDep, StateDep
from model_owner_server.app.api.multipart import parse_multipart
from model_owner_server.app.api.routing import answer, api_router
from model_owner_server.app.api.workdir import request_workdir
from model_owner_server.app.services import evaluations as service
from model_owner_server.app.services.access import visible_evaluation
from model_owner_server.app.services.evaluations import MAX_ID_CHARS, MAX_TASK_CHARS
from model_owner_server.app.services.views import evaluation_out
from shared.api import MAX_EVAL_LIMIT, EvaluationList, EvaluationOut, EvaluationRequest
from shared.data_formats import MAX_MC_CHOICES, MAX_MC_ROW_BYTES, DataFormatError, RowCapError

router = api_router(prefix="/v1/evaluations", tags=["evaluations"])

CREATE_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": EvaluationRequest.model_json_schema(),
                         "example": {"adapter_id": "ada-0f1e2d3c4b5a6978", "task": "winowhy", "limit": 200}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["adapter_id", "file"], "properties": {
        "adapter_id": {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS},
        "task": {"type": "string", "maxLength": MAX_TASK_CHARS,
                 "description": "a name for this data set (default: custom)"},
        "limit": {"type": "integer", "minimum": 1, "maximum": MAX_EVAL_LIMIT,
                  "description": "evaluate on the first N rows (default: every row); sent before the file, "
                                 "the rest of the file is not parsed"},
        "file": {"type": "string", "format": "binary",
                 "description": f'JSONL rows {{"context": str, "choices": [str, ...], "label": int}}: at most '
                                f'{MAX_EVAL_LIMIT} rows (413), {MAX_MC_ROW_BYTES} bytes and {MAX_MC_CHOICES} '
                                'choices per row (422)'}}}},
}}}


async def _json_request(request: Request) -> EvaluationRequest:
    body = await request.body()  # the request guard capped it (SCALEOT_MAX_JSON_BYTES) and checked its bounds
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"request body is not valid JSON: {exc}") from exc
    try:
        return EvaluationRequest.model_validate(payload)
    except ValidationError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            json.loads(exc.json(include_url=False, include_input=False))) from exc


@router.post("", response_model=EvaluationOut, status_code=status.HTTP_202_ACCEPTED, openapi_extra=CREATE_BODY,
             summary="Evaluate an adapter on a built-in task (JSON) or an uploaded JSONL (multipart)",
             responses={400: {"description": "malformed body"}, 404: {"description": "unknown adapter"},
                        413: {"description": "over the upload cap or the row cap"},
                        422: {"description": "invalid request/data"}})
async def create_evaluation(request: Request, state: StateDep, principal: PrincipalDep) -> EvaluationOut:
    def create(adapter_id: str, task: str, limit: int | None, upload: Path | None) -> EvaluationOut:
        with Session(state.engine, expire_on_commit=False) as session:
            row = service.create_evaluation(session, state, principal, adapter_id, task, limit, upload)
            return evaluation_out(session, row)

    if request.headers.get("content-type", "").startswith("multipart/"):
        with request_workdir(state, "eval-") as work:
            # rows are checked and counted as the body arrives: a refusal stops reading, nothing is stored
            checked = service.EvaluationUpload()
            try:
                form = await parse_multipart(request, work, state.settings.max_upload_bytes, checked.sink_for)
            except RowCapError as exc:
                raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, str(exc)) from exc
            except DataFormatError as exc:
                raise service.format_problems(exc.path.name, exc) from exc
            fields = service.upload_fields(form.fields, len([f for f in form.files if f.field == "file"]))
            upload = next(f for f in form.files if f.field == "file")
            data = await run_in_threadpool(checked.data_file, upload, fields.limit, work / "data.jsonl")
            return await run_in_threadpool(create, fields.adapter_id, fields.task, fields.limit, data)
    body = await _json_request(request)
    await run_in_threadpool(service.check_builtin_task, body.task)
    return await run_in_threadpool(create, body.adapter_id, body.task, body.limit or state.settings.eval_limit, None)


@router.get("", response_model=EvaluationList, summary="Your evaluations (admin: all)")
def list_evaluations(session: ReadSessionDep, principal: PrincipalDep) -> Response:
    from model_owner_server.db.models import Evaluation, Job

    # each row with its job in the same query, not one status query per evaluation
    query = (select(Evaluation, Job).outerjoin(Job, col(Job.id) == col(Evaluation.job_id))
             .order_by(col(Evaluation.created_at).desc()))
    if not principal.is_admin:
        query = query.where(Evaluation.owner_id == principal.owner_id)
    return answer(EvaluationList(items=[evaluation_out(session, row, job) for row, job in session.exec(query).all()]))


@router.get("/{evaluation_id}", response_model=EvaluationOut, summary="State and the evaluation matrix",
            responses={404: {"description": "unknown, or another owner's"}})
def get_evaluation(evaluation_id: str, session: ReadSessionDep, principal: PrincipalDep) -> Response:
    return answer(evaluation_out(session, visible_evaluation(session, principal, evaluation_id)))


@router.post("/{evaluation_id}/cancel", response_model=EvaluationOut, status_code=status.HTTP_202_ACCEPTED,
             summary="Cancel a queued or running evaluation",
             responses={404: {"description": "not found"}, 409: {"description": "already finished"}})
def cancel_evaluation(evaluation_id: str, state: StateDep, session: SessionDep, principal: PrincipalDep
                      ) -> EvaluationOut:
    row = visible_evaluation(session, principal, evaluation_id)
    service.cancel_job(state, row)
    session.expire_all()
    return evaluation_out(session, row)
