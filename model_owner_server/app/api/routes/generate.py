"""Generation with the plugged model (full model + the data owner's adapter)."""

from __future__ import annotations

from fastapi import HTTPException, Response, status
from fastapi.concurrency import run_in_threadpool
from sqlmodel import Session

from model_owner_server.app.api.deps import PrincipalDep, StateDep
from model_owner_server.app.api.routing import answer, api_router
from model_owner_server.app.services.access import visible_adapter
from model_owner_server.app.services.generation import generate
from model_owner_server.db.models import Emulator
from model_owner_server.serving.scheduler import QueueFull
from shared.api import GenerateOut, GenerateRequest

router = api_router(prefix="/v1/adapters", tags=["generation"])


@router.post("/{adapter_id}/generate", response_model=GenerateOut, summary="Generate text with the plugged model",
             responses={404: {"description": "unknown, or another owner's adapter"},
                        409: {"description": "the emulator of the adapter is not available"},
                        410: {"description": "the adapter's stored file is missing or damaged: upload it again"},
                        422: {"description": "out-of-bounds values; prompt + max_new_tokens over the context window"},
                        503: {"description": "the model's generation queue is full: retry after Retry-After seconds"}})
async def generate_text(adapter_id: str, body: GenerateRequest, state: StateDep, principal: PrincipalDep) -> Response:
    def run() -> GenerateOut:
        with Session(state.engine, expire_on_commit=False) as session:  # closed before the generation
            adapter = visible_adapter(session, principal, adapter_id)
            emulator = session.get(Emulator, adapter.emulator_id)
        if emulator is None or emulator.manifest_json is None:
            raise HTTPException(status.HTTP_409_CONFLICT, f"the emulator of adapter {adapter_id} is not available")
        try:
            return generate(state, adapter, emulator, body)
        except QueueFull as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc),
                                headers={"Retry-After": str(exc.retry_after_s)}) from exc

    async with state.generation_slots():
        return answer(await run_in_threadpool(run))
