"""The dashboard's pages under /ui: server-rendered, no script, over the same services as the REST API.

Who may see what is the API's rule: a data owner sees the emulators it requested and its own adapters,
evaluations and jobs (anything else is a 404 page, as the API answers 404); the jobs' cancel buttons and the
owners page are the admin's (403 for a data owner). Every form carries a CSRF token bound to the session.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Form, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from sqlmodel import Session, select
from starlette.responses import RedirectResponse, Response

from model_owner_server.app.api.deps import ReadSessionDep, SessionDep, StateDep, authenticate
from model_owner_server.app.api.routing import api_router
from model_owner_server.app.core.security import Principal, key_id_of
from model_owner_server.app.core.state import AppState
from model_owner_server.app.services import jobs as job_service
from model_owner_server.app.services import listing
from model_owner_server.app.services.access import visible_adapter, visible_emulator_and_job, visible_evaluation
from model_owner_server.app.services.overview import served_models
from model_owner_server.app.services.owners import create_key, revoke_keys
from model_owner_server.app.services.views import adapter_out, emulator_out, evaluation_out
from model_owner_server.app.ui import charts, session
from model_owner_server.app.ui.render import HERE, page
from model_owner_server.db.models import ApiKey, JobKind, JobState, Owner
from model_owner_server.recommendation.rule import NoRecommendationError, recommended_point, selection_caveat
from shared.api import OwnerCreate
from shared.job_outcomes import MATRIX_ROWS

router = api_router(prefix="/ui", include_in_schema=False)

CSRF_REFUSED = ("the form was refused: its security token is missing or does not belong to this session (CSRF "
                "check). Reload the page and submit it again.")


@dataclass(frozen=True)
class Viewer:
    principal: Principal
    name: str  # "admin", or the data owner's name
    csrf: str  # the token every form of this session carries
    expires_at: float

    @property
    def is_admin(self) -> bool:
        return self.principal.is_admin


def _secret(state: AppState) -> bytes:
    return session.secret_of(state.settings.admin_key)


def current_viewer(request: Request, state: StateDep) -> Viewer:
    """The signed-in viewer; 401 (rendered as a page) for no, a forged, an expired or a revoked session."""
    secret = _secret(state)
    try:
        signed_in = session.read_session(secret, request.cookies.get(session.SESSION_COOKIE))
    except session.BadCookie as exc:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc)) from None
    csrf = session.csrf_token(secret, signed_in.nonce)
    if signed_in.is_admin:
        return Viewer(Principal("admin"), "admin", csrf, signed_in.expires_at)
    with Session(state.engine) as db:
        key = db.get(ApiKey, signed_in.key_id)
        owner = db.get(Owner, signed_in.owner_id)
    if key is None or key.revoked or owner is None or key.owner_id != owner.id:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "the key this session was opened with is revoked: "
                            "sign in with a valid key")
    return Viewer(Principal("owner", owner_id=owner.id), owner.name, csrf, signed_in.expires_at)


ViewerDep = Annotated[Viewer, Depends(current_viewer)]


def admin_viewer(viewer: ViewerDep) -> Viewer:
    if not viewer.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this page needs the model owner's admin key")
    return viewer


AdminViewerDep = Annotated[Viewer, Depends(admin_viewer)]


def check_csrf(viewer: Viewer, token: str) -> None:
    if not token or not hmac.compare_digest(token.encode(), viewer.csrf.encode()):
        raise HTTPException(status.HTTP_403_FORBIDDEN, CSRF_REFUSED)


def view(request: Request, viewer: Viewer, template: str, status_code: int = 200, **context: Any) -> Response:
    return page(request, template, status_code, viewer=viewer, csrf=viewer.csrf, **context)


# ---- sign-in ----------------------------------------------------------------------------------------------

def _login_page(request: Request, state: AppState, error: str | None = None,
                status_code: int = status.HTTP_200_OK) -> Response:
    cookie, token = session.new_login_cookie(_secret(state))
    response = page(request, "login.html", status_code, login_csrf=token, error=error)
    session.set_cookie(response, request, session.LOGIN_COOKIE, cookie, session.LOGIN_TTL_S)
    return response


@router.get("/login")
def login_form(request: Request, state: StateDep) -> Response:
    try:
        session.read_session(_secret(state), request.cookies.get(session.SESSION_COOKIE))
        return RedirectResponse("/ui", status.HTTP_303_SEE_OTHER)
    except session.BadCookie:
        return _login_page(request, state)


@router.post("/login")
async def login(request: Request, state: StateDep, key: Annotated[str, Form(max_length=400)] = "",
                csrf: Annotated[str, Form(max_length=200)] = "") -> Response:
    secret = _secret(state)
    nonce = session.login_nonce(secret, request.cookies.get(session.LOGIN_COOKIE))
    if nonce is None or not session.csrf_ok(secret, nonce, csrf, "login"):
        return _login_page(request, state, CSRF_REFUSED, status.HTTP_403_FORBIDDEN)
    try:
        principal = await run_in_threadpool(authenticate, state, key.strip() or None)
    except HTTPException as exc:
        return _login_page(request, state, str(exc.detail), status.HTTP_401_UNAUTHORIZED)
    ttl = session.session_ttl_s()
    cookie = session.new_session_cookie(secret, principal.role, principal.owner_id,
                                        None if principal.is_admin else key_id_of(key.strip()), ttl)
    response = RedirectResponse("/ui", status.HTTP_303_SEE_OTHER)
    session.set_cookie(response, request, session.SESSION_COOKIE, cookie, ttl)
    session.clear_cookie(response, request, session.LOGIN_COOKIE)
    return response


@router.post("/logout")
def logout(request: Request, state: StateDep, viewer: ViewerDep,
           csrf: Annotated[str, Form(max_length=200)] = "") -> Response:
    check_csrf(viewer, csrf)
    response = RedirectResponse("/ui/login", status.HTTP_303_SEE_OTHER)
    session.clear_cookie(response, request, session.SESSION_COOKIE)
    return response


@router.get("/static/ui.css")
def stylesheet() -> Response:
    return Response((HERE / "static" / "ui.css").read_bytes(), media_type="text/css")


# ---- pages ------------------------------------------------------------------------------------------------

@router.get("")
def overview(request: Request, state: StateDep, db: ReadSessionDep, viewer: ViewerDep) -> Response:
    return view(request, viewer, "overview.html", models=served_models(state),
                summary=job_service.summary(db, viewer.principal), counts=listing.counts(db, viewer.principal),
                settings=state.settings)


@router.get("/jobs")
def jobs_page(request: Request, db: ReadSessionDep, viewer: ViewerDep, page_no: Annotated[int, Query(
              alias="page", ge=1, le=10**6)] = 1, state: Annotated[str | None, Query(max_length=16)] = None,
              kind: Annotated[str | None, Query(max_length=32)] = None) -> Response:
    jobs = job_service.list_jobs(db, viewer.principal, state or None, kind or None, listing.PAGE_SIZE,
                                 (page_no - 1) * listing.PAGE_SIZE)
    live = any(j.state in (JobState.queued, JobState.running) for j in jobs.items)
    pager = listing.Page(jobs.items, jobs.total, page_no)
    return view(request, viewer, "jobs.html", jobs=jobs.items, pager=pager, live=live, state=state or "",
                kind=kind or "", states=[s.value for s in JobState], kinds=[k.value for k in JobKind])


@router.get("/jobs/{job_id}")
def job_page(request: Request, job_id: str, db: ReadSessionDep, viewer: ViewerDep) -> Response:
    job = job_service.job_out(job_service.visible_job(db, viewer.principal, job_id))
    return view(request, viewer, "job.html", job=job, live=job.state in (JobState.queued, JobState.running))


@router.post("/jobs/{job_id}/cancel")
def cancel_job(job_id: str, state: StateDep, db: SessionDep, viewer: AdminViewerDep,
               csrf: Annotated[str, Form(max_length=200)] = "") -> Response:
    check_csrf(viewer, csrf)
    job_service.cancel(db, state.engine, viewer.principal, job_id)
    return RedirectResponse(f"/ui/jobs/{job_id}", status.HTTP_303_SEE_OTHER)


@router.get("/emulators")
def emulators_page(request: Request, state: StateDep, db: ReadSessionDep, viewer: ViewerDep,
                   page_no: Annotated[int, Query(alias="page", ge=1, le=10**6)] = 1) -> Response:
    emulators = listing.emulators_page(db, state.store, viewer.principal, page_no)
    return view(request, viewer, "emulators.html", pager=emulators)


@router.get("/emulators/{emulator_id}")
def emulator_page(request: Request, emulator_id: str, state: StateDep, db: ReadSessionDep,
                  viewer: ViewerDep) -> Response:
    emulator = emulator_out(db, state.store, *visible_emulator_and_job(db, viewer.principal, emulator_id))
    layers = charts.layer_map(emulator.manifest) if emulator.manifest else None
    adapters = listing.adapters_page(db, viewer.principal, 1, emulator_id=emulator.id)
    return view(request, viewer, "emulator.html", emulator=emulator, layers=layers, adapters=adapters,
                kind_labels=charts.KIND_LABEL, total_size=sum(f.size for f in emulator.files))


@router.get("/adapters")
def adapters_page(request: Request, db: ReadSessionDep, viewer: ViewerDep,
                  page_no: Annotated[int, Query(alias="page", ge=1, le=10**6)] = 1) -> Response:
    return view(request, viewer, "adapters.html", pager=listing.adapters_page(db, viewer.principal, page_no))


@router.get("/adapters/{adapter_id}")
def adapter_page(request: Request, adapter_id: str, db: ReadSessionDep, viewer: ViewerDep) -> Response:
    row = visible_adapter(db, viewer.principal, adapter_id)
    owner = db.get(Owner, row.owner_id) if viewer.is_admin and row.owner_id else None
    evaluations = listing.evaluations_page(db, viewer.principal, 1, adapter_id=row.id)
    return view(request, viewer, "adapter.html", adapter=adapter_out(row), owner=owner.name if owner else None,
                evaluations=evaluations)


@router.get("/evaluations")
def evaluations_page(request: Request, db: ReadSessionDep, viewer: ViewerDep,
                     page_no: Annotated[int, Query(alias="page", ge=1, le=10**6)] = 1) -> Response:
    return view(request, viewer, "evaluations.html", pager=listing.evaluations_page(db, viewer.principal, page_no))


@router.get("/evaluations/{evaluation_id}")
def evaluation_page(request: Request, evaluation_id: str, db: ReadSessionDep, viewer: ViewerDep) -> Response:
    evaluation = evaluation_out(db, visible_evaluation(db, viewer.principal, evaluation_id))
    same_task = listing.evaluations_page(db, viewer.principal, 1, task=evaluation.task, succeeded_only=True)
    compared = [e.item for e in same_task.items]
    return view(request, viewer, "evaluation.html", evaluation=evaluation, matrix_rows=MATRIX_ROWS,
                chart=charts.comparison_chart(compared), compared=compared)


@router.get("/frontier")
def frontier_page(request: Request, state: StateDep, viewer: ViewerDep,
                  model: Annotated[str | None, Query(max_length=400)] = None,
                  privacy_gap: Annotated[float | None, Query(ge=-100, le=100)] = None,
                  conservative: bool = False) -> Response:
    served = list(state.settings.models)
    chosen = model if model in served else next((m for m in served if m in state.frontiers), None)
    recommendation: dict[str, Any] | None = None
    picked = None
    if chosen is not None and privacy_gap is not None and chosen in state.frontiers:
        frontier = state.frontiers[chosen]
        try:
            picked = recommended_point(frontier, privacy_gap, conservative=conservative)
            recommendation = {"point": picked, "adapter": frontier.adapter, "caveat": selection_caveat(frontier)}
        except NoRecommendationError as exc:
            recommendation = {"error": str(exc)}
    frontiers = [{"model": name, "frontier": state.frontiers[name],
                  "chart": charts.frontier_chart(state.frontiers[name], picked if name == chosen else None)}
                 for name in served if name in state.frontiers]
    return view(request, viewer, "frontier.html", frontiers=frontiers, served=served, chosen=chosen,
                privacy_gap=privacy_gap, conservative=conservative, recommendation=recommendation,
                picked=picked)


@router.get("/owners")
def owners_page(request: Request, db: ReadSessionDep, viewer: AdminViewerDep) -> Response:
    return view(request, viewer, "owners.html", owners=listing.owners(db), created=None)


def _owner_exists(db: Session, name: str) -> bool:
    return db.exec(select(Owner).where(Owner.name == name)).first() is not None


@router.post("/owners")
def create_owner(request: Request, state: StateDep, db: SessionDep, viewer: AdminViewerDep,
                 name: Annotated[str, Form(max_length=200)] = "",
                 csrf: Annotated[str, Form(max_length=200)] = "") -> Response:
    check_csrf(viewer, csrf)
    try:
        body = OwnerCreate(name=name.strip())
    except ValidationError:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "an owner name is 1-120 characters: letters, "
                            "digits, '.', '_' and '-', starting with a letter or digit") from None
    if _owner_exists(db, body.name):
        raise HTTPException(status.HTTP_409_CONFLICT, f"data owner {body.name!r} exists; add a key to it instead")
    owner, key_id, key = create_key(db, body.name)
    return view(request, viewer, "owners.html", status.HTTP_201_CREATED, owners=listing.owners(db),
                created={"name": owner.name, "key_id": key_id, "api_key": key})


@router.post("/owners/{name}/keys")
def add_key(request: Request, name: str, state: StateDep, db: SessionDep, viewer: AdminViewerDep,
            csrf: Annotated[str, Form(max_length=200)] = "") -> Response:
    check_csrf(viewer, csrf)
    if not _owner_exists(db, name):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"data owner {name[:120]!r} not found")
    owner, key_id, key = create_key(db, name)
    return view(request, viewer, "owners.html", status.HTTP_201_CREATED, owners=listing.owners(db),
                created={"name": owner.name, "key_id": key_id, "api_key": key})


@router.post("/owners/{name}/revoke")
def revoke(name: str, state: StateDep, db: SessionDep, viewer: AdminViewerDep,
           csrf: Annotated[str, Form(max_length=200)] = "") -> Response:
    check_csrf(viewer, csrf)
    if not _owner_exists(db, name):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"data owner {name[:120]!r} not found")
    revoke_keys(db, name)
    state.keys.clear()  # this process forgets them at once, as the API's revoke does
    return RedirectResponse("/ui/owners", status.HTTP_303_SEE_OTHER)
