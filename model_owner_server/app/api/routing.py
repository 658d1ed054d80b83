"""Routes whose database connection is never held while the request waits for a thread.

FastAPI runs a sync endpoint in the thread pool, then serialises its answer in the thread pool again,
and closes the request's dependencies (the session) only after that. A session therefore kept its
pooled connection while waiting for a second thread: with more requests in flight than the pool has
connections, every thread could end up waiting for a connection held by a request that was waiting
for a thread, and requests failed after the pool timeout (64 clients on `GET /v1/adapters` did).
Here a sync endpoint closes its sessions in its own thread as it returns; the endpoints build their
whole answer before returning, so nothing reads the session afterwards.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from sqlmodel import Session


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
