"""Emulator file downloads: only files listed in the manifest (plus the manifest), ETag = sha256,
single-range `Range` (206/416) and `If-Range`, `If-None-Match` (304). Streams from the store; a whole
file on local disk goes out by path when the ASGI server offers `http.response.pathsend` (sendfile,
no copy through Python); uvicorn does not, so it gets 1 MiB chunks."""

from __future__ import annotations

import hashlib
from pathlib import Path

from fastapi import Header, HTTPException, Request, Response, status
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from model_owner_server.app.api.deps import PrincipalDep, SessionDep, StateDep
from model_owner_server.app.api.ranges import Unsatisfiable, none_match, parse_range, range_applies
from model_owner_server.app.api.routing import api_router
from model_owner_server.app.services.access import visible_emulator_and_job
from model_owner_server.app.services.errors import Gone
from model_owner_server.db.models import JobState
from model_owner_server.emulators.stored import damaged_error, stored_problems, try_mark_damaged
from model_owner_server.storage.keys import emulator_file
from shared.manifest import MANIFEST_NAME, EmulatorManifest

router = api_router(prefix="/v1/emulators", tags=["emulators"])
CHUNK = 1 << 20
PATHSEND = "http.response.pathsend"


class PathSendResponse(Response):
    """Headers from the route, body sent by the ASGI server from `path` (ASGI pathsend extension)."""

    def __init__(self, path: Path, status_code: int, headers: dict[str, str]) -> None:
        super().__init__(status_code=status_code, headers=headers, media_type="application/octet-stream")
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": PATHSEND, "path": str(self.path)})


@router.head("/{emulator_id}/files/{name}", include_in_schema=False)
@router.get(
    "/{emulator_id}/files/{name}", response_class=StreamingResponse,
    summary="Download one emulator file (ETag, Range, If-Range)",
    responses={200: {"content": {"application/octet-stream": {}}}, 206: {"description": "partial content"},
               304: {"description": "not modified"}, 404: {"description": "no such emulator or file"},
               409: {"description": "emulator not built yet"},
               410: {"description": "the emulator's stored files are missing or damaged: request it again"},
               416: {"description": "range not satisfiable"}},
)
def download_file(
    emulator_id: str, name: str, request: Request, state: StateDep, session: SessionDep, principal: PrincipalDep,
    range_header: str | None = Header(None, alias="range"),
    if_range: str | None = Header(None, alias="if-range"),
    if_none_match: str | None = Header(None, alias="if-none-match"),
) -> Response:
    row, job = visible_emulator_and_job(session, principal, emulator_id)
    if row.manifest_json is None or job is None or job.state != JobState.succeeded:
        current = job.state if job else "queued"
        raise HTTPException(status.HTTP_409_CONFLICT, f"emulator {emulator_id} is {current}, not built yet; "
                            "poll GET /v1/emulators/{id} until its state is succeeded")
    manifest = EmulatorManifest.model_validate_json(row.manifest_json)
    problems = stored_problems(state.store, row.id, manifest)
    if problems:  # never hand out part of a broken emulator: mark it for rebuild, say so (410)
        try_mark_damaged(session.get_bind(), row.id, job.id, problems)
        raise Gone(damaged_error(row.id, problems))
    key = emulator_file(emulator_id, name)
    info = state.store.stat(key) if (name == MANIFEST_NAME or name in manifest.files) else None
    if info is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"emulator {emulator_id} has no file {name!r}; files: "
                            f"{', '.join([MANIFEST_NAME, *sorted(manifest.files)])}")
    if name == MANIFEST_NAME:
        digest = hashlib.sha256(b"".join(state.store.read_range(key, 0, info.size - 1))).hexdigest()
    else:
        digest = manifest.files[name].sha256
    etag = f'"{digest}"'
    headers = {"ETag": etag, "Accept-Ranges": "bytes", "Cache-Control": "private, max-age=0",
               "Content-Disposition": f'attachment; filename="{name}"'}
    if none_match(if_none_match, etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    try:
        wanted = parse_range(range_header, info.size) if range_applies(if_range, etag) else None
    except Unsatisfiable:
        # a JSON reason, not the file's attachment headers; the header itself is not echoed (it can
        # be thousands of characters long)
        refusal = {k: v for k, v in headers.items() if k != "Content-Disposition"}
        return JSONResponse({"detail": f"Range not satisfiable: {name} is {info.size} bytes; ask for a single "
                             f"range bytes=FIRST-LAST with FIRST below {info.size}, or send no Range"},
                            status_code=status.HTTP_416_RANGE_NOT_SATISFIABLE,
                            headers={**refusal, "Content-Range": f"bytes */{info.size}"})
    start, end, code = 0, info.size - 1, status.HTTP_200_OK
    if wanted is not None:
        start, end, code = wanted.start, wanted.end, status.HTTP_206_PARTIAL_CONTENT
        headers["Content-Range"] = f"bytes {start}-{end}/{info.size}"
    headers["Content-Length"] = str(end - start + 1 if info.size else 0)
    if request.method == "HEAD" or info.size == 0:
        return Response(status_code=code, headers=headers, media_type="application/octet-stream")
    local = state.store.file_path(key) if PATHSEND in request.scope.get("extensions", {}) else None
    if local is not None and code == status.HTTP_200_OK and local.stat().st_size == info.size:
        return PathSendResponse(local, code, headers)
    body = state.store.read_range(key, start, end, CHUNK)
    return StreamingResponse(body, status_code=code, headers=headers, media_type="application/octet-stream")
