"""A 405 lists in `Allow` every method its path serves, not only those of the first route that matched
the path (`OPTIONS /v1/emulators` said `Allow: POST` although the path also serves GET; issue 27,
item 9)."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from tests.service.conftest import ADMIN, Headers


def test_405_allow_lists_every_method_of_the_path(client: TestClient, alice: Headers) -> None:
    document = client.get("/openapi.json").json()
    assert set(document["paths"]["/v1/emulators"]) == {"get", "post"}  # the case the issue found
    for template, operations in document["paths"].items():
        path = re.sub(r"\{[^}]+\}", "x", template)
        served = {method.upper() for method in operations}
        if template.endswith("/files/{name}"):
            served.add("HEAD")  # declared outside the schema, served all the same
        for method in ("OPTIONS", "PUT", "PATCH", "DELETE"):
            if method in served:
                continue
            headers = ADMIN if template.startswith("/v1/owners") else alice
            response = client.request(method, path, headers=headers)
            assert response.status_code == 405, (method, path, response.status_code)
            allowed = {m.strip() for m in response.headers["allow"].split(",")}
            assert allowed == served, (method, path, allowed)
            assert response.json() == {"detail": "Method Not Allowed"}


def test_other_http_errors_keep_their_answer(client: TestClient, alice: Headers) -> None:
    missing = client.get("/v1/no-such-route", headers=alice)
    assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"} and "allow" not in missing.headers
