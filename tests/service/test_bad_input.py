"""Bad input never causes a 500: odd bodies, content types, ids and numbers on every route."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.service.conftest import ADMIN, Headers

BODIES: list[dict[str, Any]] = [
    {"content": b"\xff\xfe\x00garbage", "headers": {"Content-Type": "application/json"}},
    {"content": b"[]", "headers": {"Content-Type": "application/json"}},
    {"content": b"null", "headers": {"Content-Type": "application/json"}},
    {"content": b'{"alpha": 1e999, "base_model": 7}', "headers": {"Content-Type": "application/json"}},
    {"content": b"--x\r\nbroken", "headers": {"Content-Type": "multipart/form-data; boundary=x"}},
    {"content": b"a=b", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
    {"content": b"", "headers": {"Content-Type": "text/plain"}},
    {"json": {"prompt": "x" * 30_000, "adapter_id": ["list"], "task": {"a": 1}, "name": "../../etc"}},
]
PATHS = ["/v1/emulators", "/v1/adapters", "/v1/evaluations", "/v1/owners", "/v1/adapters/ada-x/generate",
         "/v1/emulators/%2e%2e/cancel", "/v1/evaluations/" + "x" * 5000]


def test_no_500_for_bad_input(client: TestClient, alice: Headers) -> None:
    for headers in (alice, ADMIN):
        for path in PATHS:
            for body in BODIES:
                extra = body.get("headers", {})
                kwargs = {k: v for k, v in body.items() if k != "headers"}
                response = client.post(path, headers={**headers, **extra}, **kwargs)
                assert response.status_code < 500, (path, body, response.text)
                assert "detail" in response.json()
    for path in ("/v1/emulators/%00", "/v1/emulators/x/files/%2e%2e%2fscaleot.db", "/v1/adapters/" + "y" * 5000):
        assert client.get(path, headers=alice).status_code == 404
    ranged = client.get("/v1/emulators/x/files/config.json", headers={**alice, "Range": "bytes=zz"})
    assert ranged.status_code == 404
