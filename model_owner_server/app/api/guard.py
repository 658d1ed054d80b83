"""The request guard (pure ASGI middleware): no work for a caller before its key is checked, and no
request body larger than the caps.

FastAPI reads and parses a route's JSON body *before* it solves the route's dependencies, so an
authentication dependency alone lets anyone make the API read and parse any body. The guard runs
first, on every request:

1. `/v1/...` needs a valid key (`Authorization: Bearer <key>`): otherwise 401 at once, without reading
   a byte of the body. The caller is left in `request.state` for the `PrincipalDep` dependency.
2. A body larger than its cap is refused with 413: a declared `Content-Length` at once, a chunked one
   as soon as the count passes the cap. multipart/form-data bodies of the upload routes are capped by
   `SCALEOT_MAX_UPLOAD_BYTES` (and streamed to disk by `multipart.py`); every other body (a multipart
   one sent elsewhere too, which FastAPI would read into memory) by `SCALEOT_MAX_JSON_BYTES`.
3. A JSON body is parsed once with bounds (`shared.bounded_json`: nesting depth, digits of a number,
   no NaN/Infinity) and refused with 422 beyond them, then handed to the route unchanged.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
from fastapi import HTTPException, status
from sqlalchemy.exc import SQLAlchemyError
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from model_owner_server.app.api.deps import PRINCIPAL_KEY, authenticate, bearer_token, remembered
from model_owner_server.app.api.multipart import too_large
from model_owner_server.app.core.state import AppState
from model_owner_server.db.outage import RETRY_AFTER_S, describe, is_transient, unavailable_detail
from shared.bounded_json import JSONLimitError, loads_bounded

log = logging.getLogger("scaleot.api")

PROTECTED_PREFIX = "/v1/"
MAX_HEADER_LINES = 100  # as Go's and Node's servers; a browser sends about 20
UPLOAD_PATHS = {"/v1/adapters", "/v1/evaluations"}  # the routes that stream multipart bodies to disk


def _is_multipart(headers: Headers) -> bool:
    return headers.get("content-type", "").lower().startswith("multipart/form-data")


def _is_json(headers: Headers) -> bool:
    kind = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return kind in ("", "application/json") or (kind.startswith("application/") and kind.endswith("+json"))


def _has_body(headers: Headers) -> bool:
    return "chunked" in headers.get("transfer-encoding", "").lower() or headers.get("content-length", "0") != "0"


def _declared_length(headers: Headers) -> int | None:
    value = headers.get("content-length", "").strip()
    return int(value) if value.isdigit() and len(value) < 20 else None


class RequestGuard:
    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        try:
            if len(scope["headers"]) > MAX_HEADER_LINES:  # their bytes are bounded by the protocol (bounded_http)
                raise HTTPException(status.HTTP_431_REQUEST_HEADER_FIELDS_TOO_LARGE,
                                    f"a request may carry at most {MAX_HEADER_LINES} header lines")
            if scope["path"].startswith(PROTECTED_PREFIX):
                token = bearer_token(headers.get("authorization"))
                principal = remembered(self.state, token)
                if principal is None:  # not seen lately: the database, in the thread pool
                    principal = await anyio.to_thread.run_sync(authenticate, self.state, token)
                scope.setdefault("state", {})[PRINCIPAL_KEY] = principal
            settings = self.state.settings
            multipart = _is_multipart(headers) and scope["path"].rstrip("/") in UPLOAD_PATHS
            cap = settings.max_upload_bytes if multipart else settings.max_json_bytes
            declared = _declared_length(headers)
            if declared is not None and declared > cap:
                raise too_large(cap) if multipart else json_too_large(cap)
            if not multipart and scope["method"] not in ("GET", "HEAD", "OPTIONS", "DELETE"):
                receive = await self._checked_body(receive, cap, check_json=_is_json(headers))
        except HTTPException as exc:
            unread = exc.status_code in (status.HTTP_401_UNAUTHORIZED, status.HTTP_413_CONTENT_TOO_LARGE,
                                         status.HTTP_431_REQUEST_HEADER_FIELDS_TOO_LARGE)
            await _refuse(exc, scope, receive, send, body_unread=unread and _has_body(headers))
            return
        except SQLAlchemyError as exc:  # the key lookup found the database down: 503, like a route would answer
            if not is_transient(exc):
                raise
            log.warning("database unavailable while checking a key: %s", describe(exc))
            unavailable = HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, unavailable_detail(exc),
                                        headers={"Retry-After": str(RETRY_AFTER_S)})
            await _refuse(unavailable, scope, receive, send, body_unread=_has_body(headers))
            return
        await self.app(scope, receive, send)

    async def _checked_body(self, receive: Receive, cap: int, check_json: bool) -> Receive:
        """Read the (small) body up to the cap, check it, and return a `receive` that replays it."""
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the route see it
                return _replay(b"".join(chunks), receive, final=message)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > cap:
                raise json_too_large(cap)
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if check_json and body.strip():
            check_json_bounds(body)
        return _replay(body, receive)


def json_too_large(limit: int) -> HTTPException:
    return HTTPException(status.HTTP_413_CONTENT_TOO_LARGE,
                         f"request body exceeds {limit} bytes (SCALEOT_MAX_JSON_BYTES)")


def check_json_bounds(body: bytes) -> None:
    """422 for JSON beyond the parsing bounds; text that is not JSON is left to the route (400)."""
    try:
        loads_bounded(body)
    except JSONLimitError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"request body refused: {exc}") from None
    except (ValueError, UnicodeDecodeError):
        return


def _replay(body: bytes, receive: Receive, final: Message | None = None) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return final if final is not None else await receive()

    return replay


async def _refuse(exc: HTTPException, scope: Scope, receive: Receive, send: Send, body_unread: bool) -> None:
    headers: dict[str, Any] = dict(exc.headers or {})
    if body_unread:
        headers["Connection"] = "close"  # the body is not read: the connection cannot carry another request
    response = JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)
    await response(scope, receive, send)
