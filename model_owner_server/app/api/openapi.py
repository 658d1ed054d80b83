"""The OpenAPI document lists the error responses every operation can really return.

FastAPI declares only what a route names (plus a 422 with its own validation-error schema). The
request guard and the dependencies add more, the same way on every route: 401 on every `/v1`
operation, 403 on admin operations (tag `admin`), 404 where a path names an object, 422 where a
parameter is validated, 400 where a body is parsed, 413 and 422 on every POST (the guard caps and
checks any body sent). Every 4xx answer is `{"detail": ...}` (schema `Error`).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from model_owner_server.app.api.guard import PROTECTED_PREFIX
from shared.api import ErrorOut

ERROR_REF = {"$ref": "#/components/schemas/Error"}
OPENAI_PREFIX = "/openai/"
# the OpenAI-compatible routes answer OpenAI's error body; the guard's refusals before them (413, the JSON
# bounds' 422) keep the service's
OPENAI_ERROR_SCHEMA: dict[str, Any] = {
    "title": "OpenAIError", "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["message", "type"], "properties": {
        "message": {"type": "string"}, "type": {"type": "string"},
        "param": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "code": {"anyOf": [{"type": "string"}, {"type": "null"}]}}}}}
OPENAI_OR_SERVICE_ERROR = {"anyOf": [{"$ref": "#/components/schemas/OpenAIError"}, ERROR_REF]}
ADMIN_TAG = "admin"  # every operation of the admin router needs the admin key
DESCRIPTIONS = {
    400: "malformed body: not JSON, or not multipart/form-data where an upload is expected",
    401: "missing or invalid API key (`Authorization: Bearer <key>`)",
    403: "a data owner's key on a route for the model owner's admin key",
    404: "unknown id, or an object of another data owner",
    413: "body over the cap: SCALEOT_MAX_JSON_BYTES (JSON), SCALEOT_MAX_UPLOAD_BYTES (multipart)",
    422: "invalid request: out-of-bounds values, JSON beyond the parsing bounds, every problem of an upload",
}

# the operations that queue a job or store an upload (services/quotas.py) can answer 429
QUOTA_PATHS = ("/v1/emulators", "/v1/evaluations", "/v1/adapters", "/v1/prompt-sets",
               "/v1/emulators/{emulator_id}/agreement")
QUOTA_RESPONSE: dict[str, Any] = {
    "description": "a quota of the data owner is used up (the message names it and its value): "
                   "SCALEOT_QUOTA_ACTIVE_JOBS, SCALEOT_QUOTA_BUILDS_PER_DAY or SCALEOT_QUOTA_STORED_MB",
    "headers": {"Retry-After": {"description": "seconds to wait before asking again", "schema": {"type": "integer"}}},
}


def _codes(path: str, method: str, operation: dict[str, Any]) -> set[int]:
    codes: set[int] = set()
    if path.startswith(PROTECTED_PREFIX):
        codes.add(401)
    if ADMIN_TAG in operation.get("tags", []):
        codes.add(403)
    if "{" in path:
        codes.add(404)
    if operation.get("parameters"):
        codes.add(422)
    if method == "post":
        codes |= {413, 422}
        if "requestBody" in operation:
            codes.add(400)
    return codes


def _declare(operation: dict[str, Any], codes: set[int], openai: bool = False) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    for code in sorted(codes):
        responses.setdefault(str(code), {"description": DESCRIPTIONS[code]})
    schema = OPENAI_OR_SERVICE_ERROR if openai else ERROR_REF
    for status, response in responses.items():
        if status.startswith("4"):  # FastAPI's own 422 schema does not fit the service's error bodies
            response["content"] = {"application/json": {"schema": schema}}


def build_openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is not None:
        return app.openapi_schema
    document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas["OpenAIError"] = OPENAI_ERROR_SCHEMA
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            if method == "post" and path in QUOTA_PATHS:
                operation.setdefault("responses", {}).setdefault("429", dict(QUOTA_RESPONSE))
            _declare(operation, _codes(path, method, operation), openai=path.startswith(OPENAI_PREFIX))
    app.openapi_schema = document
    return document


def install(app: FastAPI) -> None:
    app.openapi = lambda: build_openapi(app)  # type: ignore[method-assign]
