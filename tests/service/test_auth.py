"""The auth matrix: no key / wrong key -> 401, data owner on admin routes -> 403, another owner's
objects -> 404, keys stored only as sha256 and revocable."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from model_owner_server.db.engine import make_engine
from model_owner_server.db.models import ApiKey
from model_owner_server.settings import Settings
from tests.service.conftest import ADMIN, Headers, auth

ROUTES = [
    ("get", "/v1/models"), ("get", "/v1/emulators"), ("post", "/v1/emulators"), ("get", "/v1/emulators/emu-x"),
    ("get", "/v1/emulators/emu-x/files/config.json"), ("post", "/v1/emulators/emu-x/cancel"),
    ("get", "/v1/adapters"), ("post", "/v1/adapters"), ("get", "/v1/adapters/ada-x"),
    ("post", "/v1/adapters/ada-x/generate"), ("get", "/v1/evaluations"), ("post", "/v1/evaluations"),
    ("get", "/v1/evaluations/eval-x"), ("get", "/v1/owners"), ("post", "/v1/owners"),
]


@pytest.mark.parametrize("headers", [{}, auth("wrong"), auth("sot_abc_def"), {"Authorization": "Basic eDp5"}],
                         ids=["none", "garbage", "unknown-id", "basic"])
def test_every_route_needs_a_valid_key(client: TestClient, headers: Headers) -> None:
    for method, path in ROUTES:
        response = client.request(method, path, headers=headers)
        assert response.status_code == 401, (method, path, response.text)
        assert "detail" in response.json()
    assert client.get("/healthz").status_code == 200  # the only open route


def test_admin_routes_refuse_data_owners(client: TestClient, alice: Headers) -> None:
    assert client.get("/v1/owners", headers=alice).status_code == 403
    assert client.post("/v1/owners", json={"name": "mallory"}, headers=alice).status_code == 403
    assert client.post("/v1/owners/alice/keys", headers=alice).status_code == 403
    assert client.get("/v1/owners", headers=ADMIN).status_code == 200


def test_owners_see_only_their_own_objects(client: TestClient, uploaded: dict[str, Any], bob: Headers,
                                           alice: Headers) -> None:
    emulator_id, adapter_id = uploaded["emulator"]["id"], uploaded["adapter"]["id"]
    evaluation = client.post("/v1/evaluations", json={"adapter_id": adapter_id, "task": "winowhy"}, headers=alice)
    assert evaluation.status_code == 202, evaluation.text
    evaluation_id = evaluation.json()["id"]
    for path in (f"/v1/emulators/{emulator_id}", f"/v1/emulators/{emulator_id}/files/config.json",
                 f"/v1/adapters/{adapter_id}", f"/v1/evaluations/{evaluation_id}"):
        assert client.get(path, headers=bob).status_code == 404, path
        assert client.get(path, headers=alice).status_code == 200, path
        assert client.get(path, headers=ADMIN).status_code == 200, path
    assert client.post(f"/v1/adapters/{adapter_id}/generate", json={"prompt": "hi"}, headers=bob).status_code == 404
    assert client.post(f"/v1/evaluations/{evaluation_id}/cancel", headers=bob).status_code == 404
    assert client.post("/v1/evaluations", json={"adapter_id": adapter_id, "task": "winowhy"},
                       headers=bob).status_code == 404
    for path in ("/v1/emulators", "/v1/adapters", "/v1/evaluations"):
        assert client.get(path, headers=bob).json()["items"] == []
        assert len(client.get(path, headers=alice).json()["items"]) == 1
    # requesting the same parameters grants bob the same (already built) emulator, not a copy
    again = client.post("/v1/emulators", json=uploaded["emulator"]["spec"], headers=bob)
    assert again.json()["id"] == emulator_id and again.json()["status"]["state"] == "succeeded"
    assert client.get(f"/v1/emulators/{emulator_id}/files/config.json", headers=bob).status_code == 200
    assert client.get(f"/v1/adapters/{adapter_id}", headers=bob).status_code == 404  # adapters stay private


def test_keys_are_hashed_and_revocable(client: TestClient, settings: Settings) -> None:
    created = client.post("/v1/owners", json={"name": "carol"}, headers=ADMIN).json()
    key = created["api_key"]
    assert key.startswith("sot_") and len(key) > 40
    with Session(make_engine(settings.db_url)) as session:
        stored = session.exec(select(ApiKey)).all()
    assert all(key not in row.key_hash and len(row.key_hash) == 64 for row in stored)
    assert client.get("/v1/emulators", headers=auth(key)).status_code == 200
    assert client.post("/v1/owners", json={"name": "carol"}, headers=ADMIN).status_code == 409
    second = client.post("/v1/owners/carol/keys", headers=ADMIN).json()["api_key"]
    assert client.get("/v1/emulators", headers=auth(second)).status_code == 200
    assert client.post("/v1/owners/carol/revoke", headers=ADMIN).json() == {"revoked": 2}
    assert client.get("/v1/emulators", headers=auth(key)).status_code == 401
    assert client.get("/v1/emulators", headers=auth(key[:-1] + ("A" if key[-1] != "A" else "B"))).status_code == 401
    assert client.post("/v1/owners/nobody/keys", headers=ADMIN).status_code == 404


def test_settings_refuse_a_default_admin_key(tmp_path: Any) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="SCALEOT_ADMIN_KEY"):
        Settings(data_dir=tmp_path)
    with pytest.raises(ValidationError, match="SCALEOT_ADMIN_KEY"):
        Settings(data_dir=tmp_path, admin_key="short")
    assert Settings(data_dir=tmp_path, environment="development").admin_key == "change-me"


@pytest.mark.parametrize("ttl", [0.0, 0.5])
def test_a_key_revoked_outside_the_api_stops_within_the_cache_time(tmp_path: Any, ttl: float) -> None:
    import time

    from model_owner_server.app.main import create_app
    from model_owner_server.app.services.owners import revoke_keys
    from tests.service.conftest import make_settings

    settings = make_settings(tmp_path / "data", auth_cache_s=ttl)
    with TestClient(create_app(settings)) as client:
        key = client.post("/v1/owners", json={"name": "dave"}, headers=ADMIN).json()["api_key"]
        assert client.get("/v1/emulators", headers=auth(key)).status_code == 200  # remembered from here on
        with Session(make_engine(settings.db_url)) as session:  # as `scaleot-server keys revoke` does
            assert revoke_keys(session, "dave") == 1
        if ttl:
            assert client.get("/v1/emulators", headers=auth(key)).status_code == 200  # still remembered
            time.sleep(ttl + 0.1)
        assert client.get("/v1/emulators", headers=auth(key)).status_code == 401
