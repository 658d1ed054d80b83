"""Issue 11, class 6: `If-None-Match: *` and weak ETags answer 304 (RFC 9110 §13.1.2), and the
OpenAPI document declares every status the endpoints really answer."""

from __future__ import annotations

import re
from typing import Any

import httpx
from fastapi.testclient import TestClient

from tests.service.conftest import ADMIN, Headers


def test_if_none_match_star_and_weak_etags(client: TestClient, alice: Headers, built: dict[str, Any]) -> None:
    url = next(f["url"] for f in built["emulator"]["files"] if f["name"] == "config.json")
    etag = client.get(url, headers=alice).headers["etag"]
    for header in ("*", etag, f"W/{etag}", f'"nope", W/{etag}', f'W/"nope",{etag}'):
        response = client.get(url, headers={**alice, "If-None-Match": header})
        assert response.status_code == 304, header
        assert response.headers["etag"] == etag and response.content == b""
    for header in ('"nope"', 'W/"nope"', ""):
        assert client.get(url, headers={**alice, "If-None-Match": header}).status_code == 200, header
    weak_range = client.get(url, headers={**alice, "Range": "bytes=0-1", "If-Range": f"W/{etag}"})
    assert weak_range.status_code == 200  # If-Range needs a strong match: the whole file


def declared(document: dict[str, Any], method: str, path: str) -> set[int]:
    for template, operations in document["paths"].items():
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        if re.match(pattern, path) and method in operations:
            return {int(code) for code in operations[method]["responses"]}
    raise AssertionError(f"{method.upper()} {path} is not in the OpenAPI document")


def test_openapi_declares_every_status_answered(client: TestClient, alice: Headers, uploaded: dict[str, Any]) -> None:
    document = client.get("/openapi.json").json()
    emulator, adapter = uploaded["emulator"]["id"], uploaded["adapter"]["id"]
    json_headers = {**alice, "Content-Type": "application/json"}
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("get", "/v1/models", {}), ("get", "/v1/owners", {"headers": alice}),
        ("post", "/v1/owners", {"json": {"name": "x"}, "headers": alice}),
        ("post", "/v1/owners", {"content": b"{", "headers": {**ADMIN, "Content-Type": "application/json"}}),
        ("post", "/v1/owners/nobody/keys", {"headers": ADMIN}),
        ("post", "/v1/emulators", {"content": b"[" * 50 + b"]" * 50, "headers": json_headers}),
        ("post", "/v1/emulators", {"content": b" " * 300_000, "headers": json_headers}),
        ("post", "/v1/emulators", {"json": {"base_model": "tiny-gpt2", "alpha": 7}, "headers": alice}),
        ("get", "/v1/emulators/emu-nope", {"headers": alice}),
        ("post", f"/v1/emulators/{emulator}/cancel", {"headers": alice}),
        ("get", f"/v1/emulators/{emulator}/files/nope", {"headers": alice}),
        ("get", f"/v1/emulators/{emulator}/files/config.json", {"headers": {**alice, "Range": "bytes=999999-"}}),
        ("post", "/v1/adapters", {"content": b"x", "headers": {**alice, "Content-Type": "text/plain"}}),
        ("post", "/v1/adapters", {"data": {"emulator_id": emulator}, "files": [("file", ("a.bin", b"x"))],
                                  "headers": alice}),
        ("post", f"/v1/adapters/{adapter}/generate", {"json": {"prompt": "x" * 20_000}, "headers": alice}),
        ("post", f"/v1/adapters/{adapter}/generate", {"json": {"prompt": ""}, "headers": alice}),
        ("post", "/v1/evaluations", {"json": {"adapter_id": adapter, "task": "nope"}, "headers": alice}),
        ("post", "/v1/evaluations", {"content": b"--b\r\n", "headers": {**alice, "Content-Type":
                                                                           "multipart/form-data; boundary=b"}}),
        ("get", "/v1/evaluations/eval-nope", {"headers": alice}),
    ]
    seen: set[int] = set()
    for method, path, kwargs in calls:
        response: httpx.Response = getattr(client, method)(path, **kwargs)
        assert response.status_code < 500, (method, path, response.text)
        assert response.status_code in declared(document, method, path), (method, path, response.status_code)
        seen.add(response.status_code)
    assert {400, 401, 403, 404, 409, 413, 416, 422} <= seen  # the calls above reach every error status
