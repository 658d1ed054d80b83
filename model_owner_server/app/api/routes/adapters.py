"""Adapters: streamed multipart upload validated against the emulator (201, or 422 with every
problem), list, get."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, Request, Response, status
from sqlalchemy import bindparam
from sqlmodel import col, select

from model_owner_server.app.api.deps import PrincipalDep, ReadSessionDep, StateDep
from model_owner_server.app.api.multipart import parse_multipart
from model_owner_server.app.api.routing import answer, api_router
from model_owner_server.app.api.workdir import request_workdir
from model_owner_server.app.core.probe_pool import ProbesBusy
from model_owner_server.app.services.access import visible_adapter
from model_owner_server.app.services.adapters import store_adapter
from model_owner_server.app.services.views import adapter_out
from model_owner_server.db.models import Adapter
from shared.api import AdapterList, AdapterOut

router = api_router(prefix="/v1/adapters", tags=["adapters"])

UPLOAD_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["emulator_id", "file"],
    "properties": {
        "emulator_id": {"type": "string", "description": "the emulator the adapter was tuned on"},
        "file": {"type": "array", "items": {"type": "string", "format": "binary"},
                 "description": "adapter.safetensors, or adapter_config.json + adapter_model.safetensors (LoRA)"}},
}}}}}


@router.post("", response_model=AdapterOut, status_code=status.HTTP_201_CREATED, openapi_extra=UPLOAD_BODY,
             summary="Upload a tuned adapter (multipart: emulator_id + file parts)",
             responses={400: {"description": "not multipart"}, 404: {"description": "unknown emulator"},
                        409: {"description": "emulator not built"}, 413: {"description": "over the upload cap"},
                        422: {"description": "every problem with the adapter, at once"},
                        503: {"description": "every probe slot and queue place is taken: retry after Retry-After"}})
async def upload_adapter(request: Request, state: StateDep, principal: PrincipalDep) -> AdapterOut:
    with request_workdir(state, "upload-") as work:
        (work / "parts").mkdir()
        form = await parse_multipart(request, work / "parts", state.settings.max_upload_bytes)
        try:
            return await store_adapter(state, principal, form, work)
        except ProbesBusy as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "too many adapter uploads are being checked at "
                                f"once: send it again in about {exc.retry_after_s} s",
                                headers={"Retry-After": str(exc.retry_after_s)}) from exc


# built once with a bound owner (see services/access.py)
_ALL_ADAPTERS = select(Adapter).order_by(col(Adapter.created_at).desc())
_OWN_ADAPTERS = _ALL_ADAPTERS.where(col(Adapter.owner_id) == bindparam("owner_id"))


@router.get("", response_model=AdapterList, summary="Your adapters (admin: all)")
def list_adapters(session: ReadSessionDep, principal: PrincipalDep) -> Response:
    rows = (session.exec(_ALL_ADAPTERS) if principal.is_admin
            else session.exec(_OWN_ADAPTERS, params={"owner_id": principal.owner_id}))
    return answer(AdapterList(items=[adapter_out(row) for row in rows.all()]))


@router.get("/{adapter_id}", response_model=AdapterOut, summary="One adapter",
            responses={404: {"description": "unknown, or another owner's"}})
def get_adapter(adapter_id: str, session: ReadSessionDep, principal: PrincipalDep) -> Response:
    return answer(adapter_out(visible_adapter(session, principal, adapter_id)))
