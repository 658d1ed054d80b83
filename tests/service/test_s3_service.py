"""The service with SCALEOT_STORAGE=s3 against a real S3-compatible server (see s3_server.py): the worker
builds an emulator into the bucket, the API serves its files (ranged) from there, an adapter upload goes
to the bucket and generation loads it back through the download cache. Nothing lands in the local
artifacts directory."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from model_owner_server.app.main import create_app
from model_owner_server.jobs.runner import build_worker
from model_owner_server.storage.s3 import S3ArtifactStore, S3StoreError
from tests.service.adapters import make_adapter
from tests.service.conftest import build, download, make_settings, new_owner, upload
from tests.service.s3_server import REGION, S3Server


def test_service_on_s3(s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)  # the standard credential chain
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    bucket = s3_server.new_bucket()
    settings = make_settings(tmp_path / "data", storage="s3", s3_bucket=bucket, s3_prefix="svc",
                             s3_endpoint_url=s3_server.endpoint, s3_region=REGION)
    worker = build_worker(settings, worker_id="s3-worker")
    assert isinstance(worker.services.store, S3ArtifactStore)
    with TestClient(create_app(settings)) as client:
        alice = new_owner(client, "alice")
        emulator = build(client, worker, alice)
        emulator_id = emulator["id"]
        keys = {o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]}
        assert f"svc/emulators/{emulator_id}/manifest.json" in keys
        assert {f"svc/emulators/{emulator_id}/{f['name']}" for f in emulator["files"]} <= keys

        entry = max(emulator["files"], key=lambda f: f["size"])
        url = entry["url"]
        whole = client.get(url, headers=alice)
        assert whole.status_code == 200 and whole.headers["accept-ranges"] == "bytes"
        assert len(whole.content) == entry["size"] and hashlib.sha256(whole.content).hexdigest() == entry["sha256"]
        start, end = 10, min(entry["size"] - 1, 10 + 3 * 1024 * 1024)
        part = client.get(url, headers={**alice, "Range": f"bytes={start}-{end}"})
        assert part.status_code == 206, part.text
        assert part.headers["content-range"] == f"bytes {start}-{end}/{entry['size']}"
        assert part.content == whole.content[start:end + 1]
        tail = client.get(url, headers={**alice, "Range": "bytes=-100"})
        assert tail.status_code == 206 and tail.content == whole.content[-100:]
        assert client.get(url, headers={**alice, "Range": f"bytes={entry['size']}-"}).status_code == 416

        emu_dir = download(client, alice, emulator, tmp_path / "emulator")
        make_adapter(emu_dir, tmp_path / "adapter")
        response = upload(client, alice, emulator_id,
                          [("adapter.safetensors", (tmp_path / "adapter" / "adapter.safetensors").read_bytes())])
        assert response.status_code == 201, response.text
        adapter_id = response.json()["id"]
        assert s3_server.client().list_objects_v2(Bucket=bucket, Prefix=f"svc/adapters/{adapter_id}/")["KeyCount"]
        # the upload's probe left the plugged model in the LRU; drop it, as after a restart, so that generation
        # reads the adapter back from the bucket
        client.app.state.scaleot.plugged.discard(adapter_id)
        generated = client.post(f"/v1/adapters/{adapter_id}/generate", json={"prompt": "hello", "max_new_tokens": 3},
                                headers=alice)
        assert generated.status_code == 200, generated.text
    assert not (settings.data_dir / "artifacts").exists()  # everything went to the bucket
    assert list((settings.data_dir / "s3-cache").iterdir())  # the adapter, downloaded for generation


def test_service_refuses_to_start_without_its_bucket(s3_server: S3Server, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    settings = make_settings(tmp_path / "data", storage="s3", s3_bucket="not-created",
                             s3_endpoint_url=s3_server.endpoint, s3_region=REGION)
    with pytest.raises(S3StoreError, match=r"'not-created' .* does not exist; create it or set SCALEOT_S3_BUCKET"):
        create_app(settings)
    with pytest.raises(S3StoreError, match="does not exist"):
        build_worker(settings)
