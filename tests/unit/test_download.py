"""The data owner's download against a fake server: resume hashes the bytes already on disk, a
corrupted body is refused and nothing is renamed into place."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

import data_owner_client.download as download_module
from data_owner_client.client import ClientError, ScaleOTClient
from shared.api import EmulatorOut, JobStatus
from shared.job_outcomes import JobState
from shared.manifest import MANIFEST_NAME, WEIGHTS_NAME, EmulatorManifest, FileEntry

FILES = {WEIGHTS_NAME: bytes(range(256)) * 400, "config.json": b'{"model_type": "llama"}'}


def manifest_bytes() -> bytes:
    manifest = EmulatorManifest(
        emulator_id="emu-1", base_model="m", base_model_sha256="0" * 64, method="uniform", adapter_bottom=1,
        adapter_top=1, alpha=0.5, beta=0.0, seed=0, num_full_layers=4, layers=[],
        files={n: FileEntry(sha256=hashlib.sha256(b).hexdigest(), size=len(b)) for n, b in FILES.items()})
    return manifest.model_dump_json().encode()


class FakeServer:
    """Serves FILES with Range support; `corrupt` flips one byte of every weights body it sends."""

    def __init__(self, corrupt: bool = False) -> None:
        self.corrupt, self.ranges = corrupt, list[str]()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/emulators/emu-1":
            return httpx.Response(200, json=EmulatorOut(
                id="emu-1", base_model="m", method="uniform", spec={}, state=JobState.succeeded, created_at=0.0,
                status=JobStatus(job_id="job-1", state=JobState.succeeded, progress=1.0)).model_dump(mode="json"))
        name = path.rsplit("/", 1)[-1]
        if name == MANIFEST_NAME:
            body = manifest_bytes()
            return httpx.Response(200, content=body, headers={"ETag": f'"{hashlib.sha256(body).hexdigest()}"'})
        body = FILES[name]
        if self.corrupt and name == WEIGHTS_NAME:
            body = body[:-1] + bytes([body[-1] ^ 1])
        if "range" in request.headers:
            self.ranges.append(request.headers["range"])
            start = int(request.headers["range"].removeprefix("bytes=").rstrip("-"))
            return httpx.Response(206, content=body[start:])
        return httpx.Response(200, content=body)


def test_resume_hashes_the_bytes_already_on_disk(tmp_path: Path) -> None:
    server = FakeServer()
    partial = tmp_path / ".emu.partial"
    partial.mkdir()
    (partial / f"{WEIGHTS_NAME}.part").write_bytes(FILES[WEIGHTS_NAME][:5000])
    with ScaleOTClient("http://test", "key", transport=httpx.MockTransport(server)) as client:
        result = client.download_emulator("emu-1", tmp_path / "emu")
    assert server.ranges == ["bytes=5000-"] and result.resumed == {WEIGHTS_NAME: 5000}
    assert result.downloaded == sum(map(len, FILES.values())) - 5000
    assert (tmp_path / "emu" / WEIGHTS_NAME).read_bytes() == FILES[WEIGHTS_NAME] and not partial.exists()


def test_a_wrong_prefix_on_disk_is_caught_even_when_the_rest_is_right(tmp_path: Path) -> None:
    partial = tmp_path / ".emu.partial"
    partial.mkdir()
    (partial / f"{WEIGHTS_NAME}.part").write_bytes(b"\x00" * 5000)  # not what the server has
    with ScaleOTClient("http://test", "key", transport=httpx.MockTransport(FakeServer())) as client, \
            pytest.raises(ClientError, match="sha256 mismatch after download"):
        client.download_emulator("emu-1", tmp_path / "emu")
    assert not (partial / f"{WEIGHTS_NAME}.part").exists() and not (tmp_path / "emu").exists()


@pytest.mark.parametrize("chunk", [64, 1 << 22])
def test_a_corrupted_body_is_refused_and_nothing_is_renamed(tmp_path: Path, chunk: int,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download_module, "CHUNK", chunk)  # many blocks, or one
    with ScaleOTClient("http://test", "key", transport=httpx.MockTransport(FakeServer(corrupt=True))) as client, \
            pytest.raises(ClientError, match=f"{WEIGHTS_NAME}: sha256 mismatch after download"):
        client.download_emulator("emu-1", tmp_path / "emu")
    assert not (tmp_path / "emu").exists()


def test_the_socket_is_read_in_large_pieces() -> None:
    import httpcore

    assert httpcore.HTTP11Connection.READ_NUM_BYTES == download_module.SOCKET_READ
