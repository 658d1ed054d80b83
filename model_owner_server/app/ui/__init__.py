"""The model owner's dashboard: server-rendered pages under /ui (see `pages.py`, docs/dashboard.md).

`install(app)` adds the pages, the security headers of every /ui answer, and error pages: each of the
app's exception handlers is wrapped so that under /ui its answer (the same status as the API's: 401, 403,
404, 409, 422, 503, a 500 naming only the exception's type) is rendered as a page instead of JSON.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from model_owner_server.app.ui import session
from model_owner_server.app.ui.pages import router
from model_owner_server.app.ui.render import PREFIX, UiHeaders, page

Handler = Callable[[Request, Exception], Awaitable[Response] | Response]


def _messages(detail: Any) -> tuple[str, list[str]]:
    """(the sentence, the listed problems) of an error body's `detail`."""
    if isinstance(detail, str):
        return detail, []
    if isinstance(detail, dict):
        problems = detail.get("problems")
        return str(detail.get("message", "")), [str(p) for p in problems] if isinstance(problems, list) else []
    if isinstance(detail, list):
        shown = [f"{'.'.join(str(x) for x in d.get('loc', []))}: {d.get('msg', '')}" if isinstance(d, dict) else str(d)
                 for d in detail]
        return "invalid request", shown
    return "error", []


def _as_page(original: Handler) -> Handler:
    async def handler(request: Request, exc: Exception) -> Response:
        answer = original(request, exc)
        response = await answer if isinstance(answer, Awaitable) else answer
        path = request.url.path
        if not (path == PREFIX or path.startswith(PREFIX + "/")):
            return response
        try:
            detail = json.loads(bytes(response.body)).get("detail")
        except (ValueError, AttributeError):
            detail = None
        message, problems = _messages(detail)
        rendered = page(request, "error.html", response.status_code, status_code=response.status_code,
                        message=message, problems=problems)
        for name in ("Retry-After", "Allow"):
            if name in response.headers:
                rendered.headers[name] = response.headers[name]
        if response.status_code == 401:  # a forged, expired or revoked session: forget it
            session.clear_cookie(rendered, request, session.SESSION_COOKIE)
        return rendered

    handler.renders_pages = True  # type: ignore[attr-defined]
    return handler


def install(app: FastAPI) -> None:
    """Call after the app's exception handlers are registered."""
    app.include_router(router)
    for kind, original in list(app.exception_handlers.items()):
        if isinstance(kind, type) and not getattr(original, "renders_pages", False):  # wrapped once
            app.add_exception_handler(kind, _as_page(original))
    app.add_middleware(UiHeaders)
