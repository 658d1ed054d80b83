"""Routes whose database connection is never held while the request waits for a thread.

FastAPI runs a sync endpoint in the thread pool, then serialises its answer in the thread pool again,
and closes the request's dependencies (the session) only after that. A session therefore kept its
pooled connection while waiting for a second thread: with more requests in flight than the pool has
connections, every thread could end up waiting for a connection held by a request that was waiting
for a thread, and requests failed after the pool timeout (64 clients on `GET /v1/adapters` did).
Here a sync endpoint closes its sessions in its own thread as it returns; the endpoints build their
whole answer before returning, so nothing reads the session afterwards.

Also here: the 405 answer, whose `Allow` lists every method the path serves (`http_error`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter, Request, Response, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.routing import APIRoute
from pydantic import BaseModel
from sqlmodel import Session
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import Scope


def _closing_sessions(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(endpoint)  # FastAPI reads the wrapped signature and annotations
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return endpoint(*args, **kwargs)
        finally:
            for value in (*args, *kwargs.values()):
                if isinstance(value, Session):
                    value.close()  # the connection goes back to the pool; the dependency's close is a no-op

    return run


class SessionReleasingRoute(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not inspect.iscoroutinefunction(endpoint):
            endpoint = _closing_sessions(endpoint)
        super().__init__(path, endpoint, **kwargs)


def answer(model: BaseModel) -> Response:
    """A 200 answer serialised once, here, by pydantic-core. A returned model would be dumped, validated
    again against the response model and serialised by FastAPI, in a second thread for a sync route;
    for the polled status reads (a manifest of every block) that was most of their time."""
    return Response(model.model_dump_json(), media_type="application/json")


def api_router(**kwargs: Any) -> APIRouter:
    """An APIRouter of SessionReleasingRoute (every router of the service is one)."""
    return APIRouter(route_class=SessionReleasingRoute, **kwargs)


# the methods a 405's `Allow` may list (RFC 9110 §9); the routes decide which of them a path serves
HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(routes: Sequence[BaseRoute], scope: Scope) -> list[str]:
    """Every method some route serves at the request's path. The router answers 405 from the first route
    whose path matched, so its `Allow` named only that route's methods (`POST` on `/v1/emulators`,
    which also serves GET); asking every route about every method gives the whole set, whatever the
    router's internals (FastAPI nests included routers)."""
    return [method for method in HTTP_METHODS
            if any(route.matches({**scope, "method": method})[0] is Match.FULL for route in routes)]


async def http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's answer to an HTTPException, with a 405's `Allow` listing every method of the path."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == status.HTTP_405_METHOD_NOT_ALLOWED:
        allowed = allowed_methods(request.app.router.routes, request.scope)
        if allowed:
            exc = StarletteHTTPException(exc.status_code, exc.detail,
                                         headers={**(exc.headers or {}), "Allow": ", ".join(allowed)})
    return await http_exception_handler(request, exc)
