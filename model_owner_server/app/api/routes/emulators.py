"""Emulators: request (idempotent, built by the worker), status, list, cancel."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Body, Response, status
from sqlalchemy import bindparam
from sqlmodel import col, select

from model_owner_server.app.api.deps import PrincipalDep, ReadSessionDep, SessionDep, StateDep
from model_owner_server.app.api.routing import answer, api_router
from model_owner_server.app.services import emulators as service
from model_owner_server.app.services.access import visible_emulator, visible_emulator_and_job
from model_owner_server.app.services.views import emulator_out
from model_owner_server.db.models import Emulator, EmulatorGrant, Job
from model_owner_server.emulators.spec import EmulatorSpec
from shared.api import EmulatorList, EmulatorOut, EmulatorRequest

router = api_router(prefix="/v1/emulators", tags=["emulators"])

EXAMPLES: dict[str, Any] = {
    "scaleot": {"summary": "ScaleOT: harmonizers + learned importance, no SRC",
                "value": {"base_model": "smollm2-135m", "method": "scaleot", "adapter_bottom": 2, "adapter_top": 2,
                          "alpha": 0.5, "beta": 0.0}},
    "scaleot_src": {"summary": "ScaleOT with Selective Rank Compression",
                    "value": {"base_model": "smollm2-135m", "method": "scaleot", "alpha": 0.5, "beta": 0.5}},
    "uniform": {"summary": "Offsite-Tuning uniform LayerDrop baseline (no stage 1)",
                "value": {"base_model": "smollm2-135m", "method": "uniform", "alpha": 0.5, "beta": 0.0}},
}


@router.post("", response_model=EmulatorOut, status_code=status.HTTP_202_ACCEPTED,
             summary="Request an emulator (same parameters -> same emulator, built once)",
             responses={404: {"description": "calibration_prompts names no prompt set of yours"},
                        409: {"description": "base model not prepared"}, 422: {"description": "invalid request"}})
def request_emulator(
    state: StateDep, session: SessionDep, principal: PrincipalDep,
    spec: Annotated[EmulatorRequest, Body(openapi_examples=EXAMPLES)],
) -> EmulatorOut:
    requested = service.request_emulator(session, state, EmulatorSpec.from_request(spec), principal)
    out = emulator_out(session, state.store, requested.row)
    if requested.reused_equivalent:
        out = out.model_copy(update={"reused_equivalent": True, "note": (
            f"an equivalent emulator was reused: {requested.row.id} has the same layer plan (the same blocks "
            f"kept, replaced, dropped and compressed) as this request, so the same weights; no new build")})
    return out


# the build jobs come in the same query (no query per row); built once (see services/access.py)
_ALL_EMULATORS = (select(Emulator, Job).outerjoin(Job, col(Job.id) == col(Emulator.job_id))
                  .order_by(col(Emulator.created_at).desc()))
_GRANTED_EMULATORS = _ALL_EMULATORS.join(EmulatorGrant, col(EmulatorGrant.emulator_id) == col(Emulator.id)).where(
    col(EmulatorGrant.owner_id) == bindparam("owner_id"))


@router.get("", response_model=EmulatorList, summary="Emulators you requested (admin: all)")
def list_emulators(state: StateDep, session: ReadSessionDep, principal: PrincipalDep) -> Response:
    rows = (session.exec(_ALL_EMULATORS) if principal.is_admin
            else session.exec(_GRANTED_EMULATORS, params={"owner_id": principal.owner_id}))
    return answer(EmulatorList(items=[emulator_out(session, state.store, row, job) for row, job in rows.all()]))


@router.get("/{emulator_id}", response_model=EmulatorOut, summary="Build state, progress, error, manifest",
            responses={404: {"description": "unknown, or not requested by you"}})
def get_emulator(emulator_id: str, state: StateDep, session: ReadSessionDep, principal: PrincipalDep) -> Response:
    return answer(emulator_out(session, state.store, *visible_emulator_and_job(session, principal, emulator_id)))


@router.post("/{emulator_id}/cancel", response_model=EmulatorOut, status_code=status.HTTP_202_ACCEPTED,
             summary="Withdraw your request for an emulator; its build stops when nobody else wants it",
             responses={404: {"description": "not found"}, 409: {"description": "already finished"}})
def cancel_emulator(emulator_id: str, state: StateDep, session: SessionDep, principal: PrincipalDep) -> EmulatorOut:
    row = visible_emulator(session, principal, emulator_id)
    withdrawn = service.cancel_emulator(session, row, principal)
    session.expire_all()
    return emulator_out(session, state.store, row).model_copy(update={"withdrawn": withdrawn})
