"""Adapters: streamed multipart upload validated against the emulator (201, or 422 with every
problem), list, get."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from sqlmodel import Session, col, select

from model_owner_server.app.api.deps import Principal, PrincipalDep, SessionDep, StateDep
from model_owner_server.app.api.multipart import MultipartForm, parse_multipart
from model_owner_server.app.core.state import AppState
from model_owner_server.app.schemas import AdapterList, AdapterOut
from model_owner_server.app.services.access import visible_adapter, visible_emulator
from model_owner_server.app.services.adapters import file_entries, place_files, validate
from model_owner_server.app.services.views import adapter_out
from model_owner_server.db.models import Adapter, Job, JobState
from model_owner_server.jobs.queue import new_id
from model_owner_server.storage.keys import adapter_prefix
from shared.adapter_format import AdapterError
from shared.manifest import EmulatorManifest

router = APIRouter(prefix="/v1/adapters", tags=["adapters"])

UPLOAD_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["emulator_id", "file"],
    "properties": {
        "emulator_id": {"type": "string", "description": "the emulator the adapter was tuned on"},
        "file": {"type": "array", "items": {"type": "string", "format": "binary"},
                 "description": "adapter.safetensors, or adapter_config.json + adapter_model.safetensors (LoRA)"}},
}}}}}


def rejected(problems: list[str]) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, {
        "message": f"adapter rejected: {len(problems)} problem(s)", "problems": problems})


def store_adapter(state: AppState, principal: Principal, form: MultipartForm, work: Path) -> AdapterOut:
    emulator_id = form.fields.get("emulator_id", "").strip()
    if not emulator_id:
        raise rejected(["form field 'emulator_id' is missing: name the emulator the adapter was tuned on"])
    with Session(state.engine, expire_on_commit=False) as session:
        emulator = visible_emulator(session, principal, emulator_id)
        job = session.get(Job, emulator.job_id) if emulator.job_id else None
        if emulator.manifest_json is None or job is None or job.state != JobState.succeeded:
            raise HTTPException(status.HTTP_409_CONFLICT, f"emulator {emulator_id} is not built; upload adapters "
                                "tuned on a succeeded emulator")
        manifest = EmulatorManifest.model_validate_json(emulator.manifest_json)
        directory = work / "adapter"
        directory.mkdir()
        problems = place_files(form.files, directory)
        if problems:
            raise rejected(problems)
        try:
            checked, plugged = validate(directory, state.base_models.get(manifest.base_model), manifest)
        except AdapterError as exc:
            raise rejected(exc.problems) from exc
        entries = file_entries(directory)
        row = Adapter(id=new_id("ada"), owner_id=principal.owner_id, emulator_id=emulator_id, kind=checked.kind,
                      files_json=json.dumps({k: v.model_dump() for k, v in entries.items()}),
                      size=sum(e.size for e in entries.values()))
        state.store.put_dir(adapter_prefix(row.id), directory)
        session.add(row)
        session.commit()
    state.plugged.get_or_build(row.id, lambda: plugged)  # proven by the probe: generation starts warm
    return adapter_out(row)


@router.post("", response_model=AdapterOut, status_code=status.HTTP_201_CREATED, openapi_extra=UPLOAD_BODY,
             summary="Upload a tuned adapter (multipart: emulator_id + file parts)",
             responses={400: {"description": "not multipart"}, 404: {"description": "unknown emulator"},
                        409: {"description": "emulator not built"}, 413: {"description": "over the upload cap"},
                        422: {"description": "every problem with the adapter, at once"}})
async def upload_adapter(request: Request, state: StateDep, principal: PrincipalDep) -> AdapterOut:
    tmp_root = state.settings.data_dir / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="upload-", dir=tmp_root))
    try:
        (work / "parts").mkdir()
        form = await parse_multipart(request, work / "parts", state.settings.max_upload_bytes)
        return await run_in_threadpool(store_adapter, state, principal, form, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@router.get("", response_model=AdapterList, summary="Your adapters (admin: all)")
def list_adapters(session: SessionDep, principal: PrincipalDep) -> AdapterList:
    query = select(Adapter).order_by(col(Adapter.created_at).desc())
    if not principal.is_admin:
        query = query.where(Adapter.owner_id == principal.owner_id)
    return AdapterList(items=[adapter_out(row) for row in session.exec(query).all()])


@router.get("/{adapter_id}", response_model=AdapterOut, summary="One adapter",
            responses={404: {"description": "unknown, or another owner's"}})
def get_adapter(adapter_id: str, session: SessionDep, principal: PrincipalDep) -> AdapterOut:
    return adapter_out(visible_adapter(session, principal, adapter_id))
