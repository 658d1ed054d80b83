"""Emulator requests: idempotency, validation errors, cancellation, downloads with ETag and Range."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from model_owner_server.app.main import create_app
from model_owner_server.db.engine import make_engine
from model_owner_server.db.models import Job
from model_owner_server.jobs.worker import Worker
from model_owner_server.settings import Settings
from tests.service.conftest import UNIFORM, Headers, build, new_owner


def test_same_parameters_same_emulator_built_once(client: TestClient, worker: Worker, alice: Headers,
                                                   bob: Headers, settings: Settings) -> None:
    first = client.post("/v1/emulators", json=UNIFORM, headers=alice)
    assert first.status_code == 202
    body = first.json()
    assert body["status"]["state"] == "queued" and body["id"].startswith("emu-")
    again = client.post("/v1/emulators", json=dict(reversed(list(UNIFORM.items()))), headers=alice).json()
    other = client.post("/v1/emulators", json=UNIFORM, headers=bob).json()
    assert again["id"] == other["id"] == body["id"]
    assert again["status"]["job_id"] == body["status"]["job_id"]
    different = client.post("/v1/emulators", json={**UNIFORM, "beta": 0.25}, headers=alice).json()
    assert different["id"] != body["id"]
    assert worker.run_until_idle() == 2
    done = client.get(f"/v1/emulators/{body['id']}", headers=alice).json()
    assert done["status"]["state"] == "succeeded" and done["status"]["progress"] == 1.0
    assert (done["state"], done["progress"], done["error"]) == ("succeeded", 1.0, None)  # design.md's flat fields
    assert done["manifest"]["emulator_id"] == body["id"]  # the request id is the artifact's own id
    assert {f["name"] for f in done["files"]} >= {"manifest.json", "config.json", "emulator.safetensors"}
    client.post("/v1/emulators", json=UNIFORM, headers=alice)
    assert worker.run_until_idle() == 0  # nothing rebuilt
    with Session(make_engine(settings.db_url)) as session:
        assert len(session.exec(select(Job).where(Job.subject_id == body["id"])).all()) == 1


@pytest.mark.parametrize("payload, fragment", [
    ({**UNIFORM, "alpha": 1.5}, "alpha"),
    ({**UNIFORM, "beta": -0.1}, "beta"),
    ({**UNIFORM, "method": "distill"}, "method"),
    ({**UNIFORM, "adapter_bottom": 0, "adapter_top": 0}, "adapter_bottom + adapter_top"),
    ({**UNIFORM, "adapter_bottom": 4, "adapter_top": 4}, "leaves no middle blocks"),
    ({**UNIFORM, "base_model": "gpt-4"}, "not served here"),
    ({**UNIFORM, "base_model": "/etc"}, "not served here"),
    ({"method": "uniform"}, "base_model"),
])
def test_invalid_requests_are_422(client: TestClient, alice: Headers, payload: dict[str, Any], fragment: str) -> None:
    response = client.post("/v1/emulators", json=payload, headers=alice)
    assert response.status_code == 422, response.text
    assert fragment in response.text


def test_malformed_json_is_400(client: TestClient, alice: Headers) -> None:
    response = client.post("/v1/emulators", content=b"{not json", headers={**alice, "Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json() == {"detail": "request body is not valid JSON"}


def test_cancel_and_request_again(client: TestClient, worker: Worker, alice: Headers) -> None:
    emulator_id = client.post("/v1/emulators", json=UNIFORM, headers=alice).json()["id"]
    assert client.get(f"/v1/emulators/{emulator_id}/files/config.json", headers=alice).status_code == 409
    cancelled = client.post(f"/v1/emulators/{emulator_id}/cancel", headers=alice)
    assert cancelled.status_code == 202 and cancelled.json()["status"]["state"] == "cancelled"
    assert worker.run_until_idle() == 0
    again = client.post("/v1/emulators", json=UNIFORM, headers=alice).json()
    assert again["id"] == emulator_id and again["status"]["state"] == "queued"  # a cancelled build is requeued
    worker.run_until_idle()
    assert client.post(f"/v1/emulators/{emulator_id}/cancel", headers=alice).status_code == 409  # finished
    assert client.post("/v1/emulators/emu-nope/cancel", headers=alice).status_code == 404


def test_download_etag_range_if_range(client: TestClient, worker: Worker, alice: Headers) -> None:
    emulator = build(client, worker, alice)
    entry = next(f for f in emulator["files"] if f["name"] == "emulator.safetensors")
    url, size = entry["url"], entry["size"]
    full = client.get(url, headers=alice)
    assert full.status_code == 200 and len(full.content) == size
    etag = full.headers["etag"]
    assert etag == f'"{entry["sha256"]}"' and full.headers["accept-ranges"] == "bytes"
    part = client.get(url, headers={**alice, "Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == full.content[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{size}"
    tail = client.get(url, headers={**alice, "Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == full.content[-10:]
    rest = client.get(url, headers={**alice, "Range": f"bytes={size - 5}-", "If-Range": etag})
    assert rest.status_code == 206 and rest.content == full.content[-5:]
    stale = client.get(url, headers={**alice, "Range": "bytes=0-9", "If-Range": '"another-version"'})
    assert stale.status_code == 200 and stale.content == full.content  # changed file: send it whole
    beyond = client.get(url, headers={**alice, "Range": f"bytes={size}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{size}"
    assert f"is {size} bytes" in beyond.json()["detail"]
    huge = "9" * 5000  # past Python's 4,300-digit int() limit: once a 500
    for method in ("GET", "HEAD"):
        far = client.request(method, url, headers={**alice, "Range": f"bytes={huge}-"})
        assert far.status_code == 416 and far.headers["content-range"] == f"bytes */{size}"
        to_end = client.request(method, url, headers={**alice, "Range": f"bytes=10-{huge}"})
        assert to_end.status_code == 206 and to_end.headers["content-range"] == f"bytes 10-{size - 1}/{size}"
        suffix = client.request(method, url, headers={**alice, "Range": f"bytes=-{huge}"})
        assert suffix.status_code == 206 and suffix.headers["content-range"] == f"bytes 0-{size - 1}/{size}"
    assert client.get(url, headers={**alice, "Range": f"bytes=10-{huge}"}).content == full.content[10:]
    assert client.get(url, headers={**alice, "If-None-Match": etag}).status_code == 304
    head = client.head(url, headers=alice)
    assert head.status_code == 200 and head.headers["content-length"] == str(size) and head.content == b""
    manifest = client.get(f"/v1/emulators/{emulator['id']}/files/manifest.json", headers=alice)
    assert manifest.status_code == 200 and manifest.json()["emulator_id"] == emulator["id"]
    for name in ("nope.bin", "..%2F..%2Fscaleot.db", "model.safetensors"):
        assert client.get(f"/v1/emulators/{emulator['id']}/files/{name}", headers=alice).status_code == 404


def test_concurrent_identical_requests_make_one_emulator(client: TestClient, alice: Headers, bob: Headers,
                                                         settings: Settings) -> None:
    from concurrent.futures import ThreadPoolExecutor

    spec = {**UNIFORM, "alpha": 0.25}
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda i: client.post("/v1/emulators", json=spec, headers=(alice, bob)[i % 2]),
                                  range(16)))
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["id"] for r in responses}) == 1
    with Session(make_engine(settings.db_url)) as session:
        assert len(session.exec(select(Job)).all()) == 1


class PathSendServer:
    """An ASGI server's side of `http.response.pathsend`: it advertises the extension and sends the
    named file itself (as a sendfile-capable server would), recording which paths went out so."""

    def __init__(self, app: ASGIApp) -> None:
        self.app, self.sent = app, list[str]()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = {**scope, "extensions": {**scope.get("extensions", {}), "http.response.pathsend": {}}}

        async def relay(message: Message) -> None:
            if message["type"] == "http.response.pathsend":
                self.sent.append(message["path"])
                message = {"type": "http.response.body", "body": Path(message["path"]).read_bytes()}
            await send(message)

        await self.app(scope, receive, relay)


def test_whole_files_go_out_by_path_when_the_server_offers_pathsend(settings: Settings, worker: Worker) -> None:
    server = PathSendServer(create_app(settings))
    with TestClient(server) as client:
        alice = new_owner(client, "alice")
        emulator = build(client, worker, alice)
        entry = next(f for f in emulator["files"] if f["name"] == "emulator.safetensors")
        full = client.get(entry["url"], headers=alice)
        assert full.status_code == 200 and len(full.content) == entry["size"]
        assert full.headers["etag"] == f'"{entry["sha256"]}"' and full.headers["content-length"] == str(entry["size"])
        assert len(server.sent) == 1 and server.sent[0].endswith("emulator.safetensors")
        assert Path(server.sent[0]).is_absolute()
        part = client.get(entry["url"], headers={**alice, "Range": "bytes=10-19"})  # ranges stream from the store
        assert part.status_code == 206 and part.content == full.content[10:20] and len(server.sent) == 1


def test_an_ot_kd_emulator_is_built_with_progress_and_its_record(client: TestClient, worker: Worker, alice: Headers,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import model_owner_server.emulators.distill as distill

    fast = distill.DistillSettings(steps=6, batch_size=2, seq_len=32, check_sequences=2)
    monkeypatch.setattr(distill, "DistillSettings", lambda: fast)  # the service's default settings, made small
    seen: list[float] = []
    real = distill.distill_kept_blocks

    def spy(*args: Any) -> Any:  # called positionally; the last argument is the job's progress callback
        def relay(fraction: float, message: str) -> None:
            seen.append(fraction)
            if args[-1] is not None:
                args[-1](fraction, message)
        return real(*args[:-1], relay)

    monkeypatch.setattr("model_owner_server.emulators.build.distill_kept_blocks", spy)
    plain = client.post("/v1/emulators", json=UNIFORM, headers=alice).json()
    body = client.post("/v1/emulators", json={**UNIFORM, "options": {"distill": True}}, headers=alice).json()
    assert body["id"] != plain["id"]
    assert worker.run_until_idle() == 2
    done = client.get(f"/v1/emulators/{body['id']}", headers=alice).json()
    assert done["state"] == "succeeded" and seen and seen[-1] == 1.0
    record = done["manifest"]["distill"]
    assert record["steps"] == 6 and record["error_after"] <= record["error_before"]
    assert client.get(f"/v1/emulators/{plain['id']}", headers=alice).json()["manifest"]["distill"] is None
