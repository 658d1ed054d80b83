"""The dashboard's rules with the in-process app: every page renders for the admin and for a data owner, who
sees only its own objects (another owner's is a 404 page, as the API answers 404); user strings are escaped;
a form without the session's CSRF token is refused; a missing, forged, expired or revoked session is a 401
page; pages carry the security headers; an unexpected error is a page naming no traceback."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from model_owner_server.app.main import create_app
from model_owner_server.app.services.owners import create_key
from model_owner_server.app.ui import session as ui_session
from model_owner_server.jobs.runner import build_worker
from model_owner_server.jobs.worker import Worker
from model_owner_server.settings import Settings
from tests.service.adapters import make_adapter
from tests.service.conftest import ADMIN, ADMIN_KEY, UNIFORM, build, download, make_settings, upload
from tests.service.ui_helpers import XSS, csrf_of, frontier_file, sign_in

MC = "\n".join(json.dumps({"context": f"Q{i}: the sky is", "choices": [" blue", " green"], "label": 0})
               for i in range(6)).encode()


@pytest.fixture
def ui_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data", frontiers={"tiny-gpt2": frontier_file(tmp_path / "f.json", "tiny-gpt2")})


@pytest.fixture
def app_client(ui_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(ui_settings)) as test_client:
        yield test_client


@pytest.fixture
def ui_worker(ui_settings: Settings) -> Worker:
    return build_worker(ui_settings, worker_id="ui-worker")


def key_of(client: TestClient, name: str) -> str:
    response = client.post("/v1/owners", json={"name": name}, headers=ADMIN)
    assert response.status_code == 201, response.text
    key: str = response.json()["api_key"]
    return key


@pytest.fixture
def world(app_client: TestClient, ui_worker: Worker, tmp_path: Path) -> dict[str, Any]:
    """alice: a built emulator, an adapter and a finished evaluation whose task name is a script; bob: a queued
    emulator; a data owner whose name is a script (created past the API's name rule, as a database could hold)."""
    alice_key, bob_key = key_of(app_client, "alice"), key_of(app_client, "bob")
    alice = {"Authorization": f"Bearer {alice_key}"}
    emulator = build(app_client, ui_worker, alice)
    make_adapter(download(app_client, alice, emulator, tmp_path / "emu"), tmp_path / "adapter")
    adapter = upload(app_client, alice, emulator["id"], [("adapter.safetensors",
                                                           (tmp_path / "adapter/adapter.safetensors").read_bytes())])
    assert adapter.status_code == 201, adapter.text
    evaluation = app_client.post("/v1/evaluations", data={"adapter_id": adapter.json()["id"], "task": XSS},
                                 files={"file": ("mc.jsonl", MC)}, headers=alice)
    assert evaluation.status_code == 202, evaluation.text
    ui_worker.run_until_idle()
    bob_emulator = app_client.post("/v1/emulators", json={**UNIFORM, "alpha": 0.25},
                                   headers={"Authorization": f"Bearer {bob_key}"}).json()
    with Session(app_client.app.state.scaleot.engine) as db:  # type: ignore[attr-defined]
        create_key(db, XSS)
    return {"alice_key": alice_key, "bob_key": bob_key, "emulator": emulator, "adapter": adapter.json(),
            "evaluation": evaluation.json(), "bob_emulator": bob_emulator}


def test_every_page_renders_for_the_admin(app_client: TestClient, world: dict[str, Any]) -> None:
    sign_in(app_client, ADMIN_KEY)
    emulator_id = world["emulator"]["id"]
    pages = {"/ui": "Served models", "/ui/jobs": world["bob_emulator"]["status"]["job_id"],
             "/ui/emulators": emulator_id, f"/ui/emulators/{emulator_id}": 'id="layer-map"',
             "/ui/adapters": world["adapter"]["id"], f"/ui/adapters/{world['adapter']['id']}": "sha256",
             "/ui/evaluations": world["evaluation"]["id"],
             f"/ui/evaluations/{world['evaluation']['id']}": "plug-in (full model + adapter)",
             "/ui/frontier?model=tiny-gpt2&privacy_gap=4": "alpha=0.5, beta=0.0",
             "/ui/owners": "alice", f"/ui/jobs/{world['bob_emulator']['status']['job_id']}": "queued"}
    for path, expected in pages.items():
        response = app_client.get(path)
        assert response.status_code == 200, (path, response.text[:500])
        assert expected in response.text, path
        assert response.headers["content-type"].startswith("text/html")
    layer_map = app_client.get(f"/ui/emulators/{emulator_id}").text
    manifest = world["emulator"]["manifest"]
    assert layer_map.count('class="cell"') == manifest["num_full_layers"]
    assert "adapter (tuned by the data owner)" in layer_map and "rank-compressed" in layer_map
    for entry in world["emulator"]["files"]:
        if entry["sha256"]:
            assert entry["sha256"] in layer_map
    evaluation = app_client.get(f"/ui/evaluations/{world['evaluation']['id']}").text
    assert 'id="matrix"' in evaluation and 'id="comparison"' in evaluation and "not measured" in evaluation
    assert "no measured scaleot point reaches" in app_client.get("/ui/frontier?model=tiny-gpt2&privacy_gap=50").text


def test_user_strings_are_escaped(app_client: TestClient, world: dict[str, Any]) -> None:
    sign_in(app_client, ADMIN_KEY)
    escaped = "&lt;script&gt;alert(&#34;owned&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"
    for path in ("/ui/owners", "/ui/evaluations", f"/ui/evaluations/{world['evaluation']['id']}"):
        html = app_client.get(path).text
        assert escaped in html, path
        assert "<script" not in html and "<img" not in html, path
    # a path segment is escaped too, in the 404 page's message
    html = app_client.get("/ui/emulators/<script>alert(1)").text
    assert "<script" not in html and "&lt;script&gt;" in html


def test_a_data_owner_sees_only_its_own_objects(app_client: TestClient, world: dict[str, Any]) -> None:
    sign_in(app_client, world["bob_key"])
    for page in ("/ui/emulators", "/ui/adapters", "/ui/evaluations", "/ui/jobs"):
        html = app_client.get(page).text
        assert world["emulator"]["id"] not in html and world["adapter"]["id"] not in html, page
    assert world["bob_emulator"]["id"] in app_client.get("/ui/emulators").text
    for path in (f"/ui/emulators/{world['emulator']['id']}", f"/ui/adapters/{world['adapter']['id']}",
                 f"/ui/evaluations/{world['evaluation']['id']}", f"/ui/jobs/{world['emulator']['status']['job_id']}"):
        response = app_client.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith("text/html") and "not found" in response.text
    assert app_client.get("/ui/owners").status_code == 403
    html = app_client.get("/ui").text
    assert "data owner bob" in html and "Owners &amp; keys" not in html


def test_forms_need_the_sessions_csrf_token(app_client: TestClient, world: dict[str, Any]) -> None:
    job_id = world["bob_emulator"]["status"]["job_id"]
    other = TestClient(app_client.app)
    other_token = sign_in(other, ADMIN_KEY)
    token = sign_in(app_client, ADMIN_KEY)
    assert token != other_token
    for data in ({}, {"csrf": "0" * 64}, {"csrf": other_token}):
        refused = app_client.post(f"/ui/jobs/{job_id}/cancel", data=data, follow_redirects=False)
        assert refused.status_code == 403 and "CSRF" in refused.text
    assert app_client.get(f"/v1/jobs/{job_id}", headers=ADMIN).json()["state"] == "queued"
    done = app_client.post(f"/ui/jobs/{job_id}/cancel", data={"csrf": token}, follow_redirects=False)
    assert done.status_code == 303
    assert app_client.get(f"/v1/jobs/{job_id}", headers=ADMIN).json()["state"] == "cancelled"
    assert app_client.post("/ui/owners", data={"name": "carol"}).status_code == 403
    assert app_client.post("/ui/logout", data={}).status_code == 403
    # the sign-in form is bound to its own pre-session cookie
    fresh = TestClient(app_client.app)
    assert fresh.post("/ui/login", data={"key": ADMIN_KEY, "csrf": "x"}).status_code == 403
    form_token = csrf_of(fresh.get("/ui/login").text)
    fresh.cookies.clear()
    assert fresh.post("/ui/login", data={"key": ADMIN_KEY, "csrf": form_token}).status_code == 403


def test_sessions_sign_in_expire_and_end(app_client: TestClient, world: dict[str, Any]) -> None:
    assert app_client.get("/ui").status_code == 401 and "Sign in" in app_client.get("/ui").text
    form = app_client.get("/ui/login")
    wrong = app_client.post("/ui/login", data={"key": "sot_nothing_x", "csrf": csrf_of(form.text)})
    assert wrong.status_code == 401 and "invalid API key" in wrong.text
    sign_in(app_client, world["alice_key"])
    cookie = app_client.cookies.get(ui_session.SESSION_COOKIE)
    assert cookie and world["alice_key"] not in cookie
    payload = base64.urlsafe_b64decode(cookie.split(".")[0] + "==").decode()
    assert world["alice_key"] not in payload and world["alice_key"].split("_")[2] not in payload

    secret = ui_session.secret_of(ADMIN_KEY)
    expired = ui_session.new_session_cookie(secret, "admin", None, None, 60, now=time.time() - 3600)
    forged = ui_session.new_session_cookie(ui_session.secret_of("another-admin-key-0123456789"), "admin", None,
                                           None, 3600)
    for value, reason in ((expired, "expired"), (forged, "invalid session"), (cookie[:-4] + "AAAA", "invalid")):
        stranger = TestClient(app_client.app, cookies={ui_session.SESSION_COOKIE: value})
        response = stranger.get("/ui/emulators")
        assert response.status_code == 401 and reason in response.text, reason
        assert 'scaleot_ui=""' in response.headers.get("set-cookie", "")  # the bad cookie is cleared

    assert app_client.get("/ui/emulators").status_code == 200
    admin = TestClient(app_client.app)
    token = sign_in(admin, ADMIN_KEY)
    assert admin.post("/ui/owners/alice/revoke", data={"csrf": token}, follow_redirects=False).status_code == 303
    ended = app_client.get("/ui/emulators")
    assert ended.status_code == 401 and "revoked" in ended.text


def test_cookies_and_security_headers(app_client: TestClient, world: dict[str, Any]) -> None:
    form = app_client.get("/ui/login")
    answer = app_client.post("/ui/login", data={"key": ADMIN_KEY, "csrf": csrf_of(form.text)}, follow_redirects=False)
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ui" in cookie and "max-age=" in cookie
    assert "secure" not in cookie  # plain http: a Secure cookie would never come back
    secure = TestClient(app_client.app, base_url="https://testserver")
    form = secure.get("/ui/login")
    assert "secure" in form.headers["set-cookie"].lower()
    answer = secure.post("/ui/login", data={"key": ADMIN_KEY, "csrf": csrf_of(form.text)}, follow_redirects=False)
    assert "secure" in answer.headers["set-cookie"].lower()
    for path in ("/ui", "/ui/jobs", "/ui/nothing-here", "/ui/emulators/emu-missing", "/ui/static/ui.css"):
        response = app_client.get(path)
        assert response.headers["x-frame-options"] == "DENY", path
        assert "script-src" not in response.headers["content-security-policy"]
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert app_client.get("/ui/nothing-here").status_code == 404
    assert "x-frame-options" not in app_client.get("/healthz").headers  # the API keeps its own answers
    assert app_client.get("/ui/jobs?state=sleeping").status_code == 422
    assert app_client.get("/ui/emulators", headers=ADMIN).status_code == 200  # the session, not a header


def test_an_unexpected_error_is_a_page_without_traceback(ui_settings: Settings, monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    from model_owner_server.app.services import listing

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("secret internals at /srv/private/path")

    monkeypatch.setattr(listing, "counts", broken)
    with TestClient(create_app(ui_settings), raise_server_exceptions=False) as client:
        sign_in_form = client.get("/ui/login")
        client.post("/ui/login", data={"key": ADMIN_KEY, "csrf": csrf_of(sign_in_form.text)})
        response = client.get("/ui")
    assert response.status_code == 500 and response.headers["content-type"].startswith("text/html")
    assert "RuntimeError" in response.text and "Traceback" not in response.text and "/srv/private" not in response.text
    assert response.headers["x-frame-options"] == "DENY"


def test_owners_are_created_with_the_key_shown_once(app_client: TestClient) -> None:
    token = sign_in(app_client, ADMIN_KEY)
    created = app_client.post("/ui/owners", data={"name": "carol", "csrf": token})
    assert created.status_code == 201
    key = created.text.split('id="new-key">')[1].split("<")[0]
    assert app_client.get("/v1/emulators", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert key not in app_client.get("/ui/owners").text  # shown once
    assert app_client.post("/ui/owners", data={"name": "carol", "csrf": token}).status_code == 409
    assert app_client.post("/ui/owners", data={"name": "<b>", "csrf": token}).status_code == 422
    added = app_client.post("/ui/owners/carol/keys", data={"csrf": token})
    assert added.status_code == 201 and 'id="new-key"' in added.text
    assert app_client.post("/ui/owners/carol/revoke", data={"csrf": token}, follow_redirects=False).status_code == 303
    assert app_client.get("/v1/emulators", headers={"Authorization": f"Bearer {key}"}).status_code == 401
