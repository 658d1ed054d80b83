"""Issue 11, class 1: no work before authentication; every JSON body capped (413); JSON nesting and
number sizes bounded (422), on every JSON route."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from model_owner_server.app.main import create_app
from tests.service.conftest import ADMIN, Headers, make_settings

JSON_ROUTES = ["/v1/emulators", "/v1/owners", "/v1/adapters/ada-0123/generate", "/v1/evaluations"]


def asgi_post(app: Any, path: str, headers: list[tuple[bytes, bytes]], chunks: int) -> tuple[int, int]:
    """POST straight to the ASGI app with a body the app would have to pull chunk by chunk; returns
    (status, chunks the app pulled)."""
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b" " * 65536, "more_body": pulled < chunks}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"), *headers], "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 80), "state": {}}
    asyncio.run(app(scope, receive, send))
    return next(m["status"] for m in sent if m["type"] == "http.response.start"), pulled


@pytest.fixture
def app(tmp_path: Any) -> Iterator[Any]:
    application = create_app(make_settings(tmp_path / "data", max_json_bytes=4096))
    with TestClient(application):  # runs start-up
        yield application


@pytest.mark.parametrize("path", JSON_ROUTES)
def test_no_body_is_read_before_the_key_is_checked(app: Any, path: str) -> None:
    for auth in ([], [(b"authorization", b"Bearer sot_abc_wrong")], [(b"authorization", b"Basic eDp5")]):
        status, pulled = asgi_post(app, path, auth, chunks=3000)  # a ~200 MB body
        assert (status, pulled) == (401, 0)
    status, pulled = asgi_post(app, path, [(b"authorization", f"Bearer {ADMIN['Authorization'][7:]}".encode())],
                               chunks=3000)
    assert status == 413 and pulled == 1  # with a key: refused at the first chunk past the 4 KiB cap


def test_declared_oversize_json_is_413_at_once(app: Any) -> None:
    client = TestClient(app)
    response = client.post("/v1/owners", content=b"{}" + b" " * 5000, headers={**ADMIN, "Content-Type":
                                                                                   "application/json"})
    assert response.status_code == 413 and "SCALEOT_MAX_JSON_BYTES" in response.json()["detail"]
    assert response.headers["connection"] == "close"
    chunked = client.post("/v1/owners", content=iter([b'{"name": "', b"a" * 5000, b'"}']),
                          headers={**ADMIN, "Content-Type": "application/json"})
    assert chunked.status_code == 413
    multipart_elsewhere = client.post("/v1/emulators", files=[("file", ("a.bin", b"x" * 5000))], headers=ADMIN)
    assert multipart_elsewhere.status_code == 413  # only the upload routes take SCALEOT_MAX_UPLOAD_BYTES


@pytest.mark.parametrize("body, fragment", [
    (b"[" * 5000 + b"]" * 5000, "nested deeper"),
    (b'{"name": ' + b"[" * 40 + b"]" * 40 + b"}", "nested deeper"),
    (b'{"name": "x", "n": ' + b"9" * 3000 + b"}", "digits"),
    (b'{"alpha": NaN}', "NaN"),
    (b'{"alpha": 1e999}', "overflows"),
])
def test_json_beyond_the_parsing_bounds_is_422(body: bytes, fragment: str, tmp_path: Any) -> None:
    with TestClient(create_app(make_settings(tmp_path / "data"))) as client:
        for path in JSON_ROUTES:
            response = client.post(path, content=body, headers={**ADMIN, "Content-Type": "application/json"})
            assert response.status_code == 422, (path, response.text)
            assert fragment in response.json()["detail"]


def test_valid_requests_still_pass_the_guard(client: TestClient, alice: Headers) -> None:
    created = client.post("/v1/owners", json={"name": "carol"}, headers=ADMIN)
    assert created.status_code == 201
    assert client.get("/v1/models", headers=alice).status_code == 200
    assert client.get("/healthz").status_code == 200  # no key needed outside /v1
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/v1/nowhere").status_code == 401  # no key: nothing about routes is revealed
