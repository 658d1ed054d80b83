"""The FastAPI app factory: settings -> state (engine, store, caches) -> routers + JSON error handlers.

`uvicorn --factory model_owner_server.app.main:create_app` or `scaleot-server serve`.
The database schema is brought to the newest Alembic revision before the app accepts requests.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import to_thread
from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from model_owner_server.app import ui
from model_owner_server.app.api import openapi
from model_owner_server.app.api.guard import RequestGuard
from model_owner_server.app.api.routes import (
    adapters,
    agreements,
    emulators,
    evaluations,
    files,
    generate,
    health,
    jobs,
    models,
    openai,
    owners,
    prompt_sets,
)
from model_owner_server.app.api.routing import http_error
from model_owner_server.app.core.state import AppState
from model_owner_server.app.services.errors import (
    Conflict,
    Gone,
    NotFound,
    ServiceError,
    TooManyRequests,
    Unprocessable,
)
from model_owner_server.db.migrate import upgrade
from model_owner_server.db.outage import RETRY_AFTER_S, describe, is_transient, unavailable_detail
from model_owner_server.settings import Settings, get_settings
from model_owner_server.storage.scratch import sweep_at_startup

log = logging.getLogger("scaleot.api")

DESCRIPTION = """The model owner's ScaleOT service. Data owners request an **emulator** (a compressed
stand-in of the model: the adapter blocks unchanged, the middle replaced by harmonizers and/or rank
compressed), tune the adapter on it locally, upload only the adapter, and get the plug-in evaluation
matrix and generations from the full model. Authenticate with `Authorization: Bearer <key>`."""


async def validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return JSONResponse({"detail": "request body is not valid JSON"}, status_code=status.HTTP_400_BAD_REQUEST)
    cleaned = [{k: v for k, v in e.items() if k in ("type", "loc", "msg")} for e in errors]
    return JSONResponse({"detail": cleaned}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


STATUS_OF = {NotFound: status.HTTP_404_NOT_FOUND, Conflict: status.HTTP_409_CONFLICT, Gone: status.HTTP_410_GONE,
             Unprocessable: status.HTTP_422_UNPROCESSABLE_CONTENT, TooManyRequests: status.HTTP_429_TOO_MANY_REQUESTS}


async def service_error(_: Request, exc: Exception) -> JSONResponse:
    """A service's refusal, with the status of its kind and the body an HTTPException would have."""
    assert isinstance(exc, ServiceError)
    code = next((c for kind, c in STATUS_OF.items() if isinstance(exc, kind)), status.HTTP_400_BAD_REQUEST)
    headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, TooManyRequests) else None
    return JSONResponse({"detail": exc.detail}, status_code=code, headers=headers)


async def database_error(request: Request, exc: Exception) -> JSONResponse:
    """A database locked past its busy timeout or unreachable (restart, failover) is temporary: 503 with
    `Retry-After`, never a 500 or the SQL text. Any other database error is a server error."""
    if not is_transient(exc):
        return await unexpected_error(request, exc)
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, describe(exc))
    return JSONResponse({"detail": unavailable_detail(exc)}, status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
                        headers={"Retry-After": str(RETRY_AFTER_S)})


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": f"internal server error ({type(exc).__name__}); see the server log"},
                        status_code=status.HTTP_500_INTERNAL_SERVER_ERROR)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    state = AppState.from_settings(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    state.schema_revision = upgrade(state.engine)
    sweep_at_startup(settings.data_dir, state.store)  # what a killed API process left (an upload's folder)
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # the limiter belongs to the running event loop, so it is sized here, not at import
        to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
        yield
        state.close_serving()  # its scheduler threads end their requests and stop

    app = FastAPI(title="ScaleOT model-owner service", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.scaleot = state
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(StarletteHTTPException, http_error)  # a 405's Allow: every method
    app.add_exception_handler(SQLAlchemyError, database_error)
    app.add_exception_handler(Exception, unexpected_error)
    for module in (health, models, owners, emulators, files, adapters, generate, evaluations, agreements,
                   prompt_sets):
        app.include_router(module.router)
    app.include_router(agreements.emulator_router)
    app.include_router(jobs.router)
    app.include_router(jobs.admin_router)
    app.include_router(openai.router)  # /openai/v1: authenticates itself, answers in OpenAI's error shape
    app.add_middleware(RequestGuard, state=state)  # authentication and body caps before any route runs
    openapi.install(app)
    ui.install(app)  # the dashboard under /ui; after the handlers, which it wraps to answer with pages
    return app
