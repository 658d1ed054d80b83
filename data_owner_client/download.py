"""Resumable, verified emulator download.

Files land in `.<out>.partial/` next to the target; an interrupted file keeps its `.part` bytes
and the next run asks only for the rest (`Range` + `If-Range` on the file's ETag, so a changed file
restarts from zero). Every file is checked against the manifest's sha256, then the directory is
verified as a whole and renamed into place in one step.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import httpcore
from pydantic import ValidationError

from data_owner_client.errors import ClientError
from shared.artifacts import ArtifactError, sha256_file, verify_emulator
from shared.job_outcomes import JobState
from shared.manifest import MANIFEST_NAME, EmulatorManifest

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx

    from data_owner_client.client import ScaleOTClient

CHUNK = 1 << 20  # hash/progress block; a module attribute so tests can interrupt mid-file
SOCKET_READ = 1 << 20
# httpcore reads the socket 64 KiB at a time, and its Python work per read held the download to
# ~0.8x curl on loopback; 1 MiB reads match curl (`scaleot-server bench http`). The attribute is a
# public class's (`httpcore.HTTP11Connection`), it is raised only if it still holds the old default,
# and tests/unit/test_download.py fails if a new httpcore drops it.
if getattr(httpcore.HTTP11Connection, "READ_NUM_BYTES", None) == 64 * 1024:
    httpcore.HTTP11Connection.READ_NUM_BYTES = SOCKET_READ


@dataclass(frozen=True)
class DownloadResult:
    path: Path
    resumed: dict[str, int]  # file -> bytes that were already on disk from an interrupted run
    downloaded: int  # bytes transferred by this run


@dataclass(frozen=True)
class DownloadProgress:
    name: str
    done: int
    total: int  # bytes of all files
    resumed_from: int = 0


def _fetch_manifest(client: ScaleOTClient, emulator_id: str) -> tuple[EmulatorManifest, bytes]:
    response = client.request("GET", f"/v1/emulators/{emulator_id}/files/{MANIFEST_NAME}")
    body = response.content
    etag = response.headers.get("etag", "").strip('"')
    if etag and hashlib.sha256(body).hexdigest() != etag:
        raise ClientError("the manifest does not match its ETag (corrupted in transit); download again")
    try:
        return EmulatorManifest.model_validate_json(body), body
    except ValidationError as exc:
        raise ClientError(f"the server sent an invalid manifest for {emulator_id}: {exc}") from exc


def _hash_prefix(part: Path, have: int) -> hashlib._Hash:
    """sha256 state after the bytes already on disk, so a resumed file is still hashed in one pass."""
    digest = hashlib.sha256()
    with part.open("rb") as f:
        while have > 0 and (block := f.read(min(CHUNK, have))):
            digest.update(block)
            have -= len(block)
    return digest


def _receive(response: httpx.Response, f: IO[bytes], digest: hashlib._Hash, have: int,
             progress: Callable[[int], None]) -> int:
    """Write the body to f while hashing it; returns the bytes now in f.

    Each piece from the network (up to SOCKET_READ) is written at once; every CHUNK bytes the pieces are
    handed to a second thread to hash while the next ones arrive (hashlib and file writes release
    the GIL). The file is thus read from the socket once, written once and hashed once, with no
    second pass over the disk and no copies into bigger buffers.
    """
    pending: list[bytes] = []
    buffered = 0

    def absorb(pieces: list[bytes]) -> None:
        for piece in pieces:
            digest.update(piece)

    with ThreadPoolExecutor(max_workers=1) as hasher:
        hashing: Future[None] | None = None
        for piece in response.iter_bytes():  # no chunk_size: httpx's re-chunking costs a copy
            f.write(piece)
            have += len(piece)
            pending.append(piece)
            buffered += len(piece)
            if buffered >= CHUNK:
                if hashing is not None:
                    hashing.result()  # blocks are hashed in order
                hashing, pending, buffered = hasher.submit(absorb, pending), [], 0
                progress(have)
        if hashing is not None:
            hashing.result()
        absorb(pending)
    progress(have)
    return have


def _download_file(client: ScaleOTClient, emulator_id: str, name: str, sha256: str, size: int, folder: Path,
                   progress: Callable[[int], None]) -> int:
    """Fetch one file into folder/name (resuming folder/name.part), checking its sha256 on the way;
    returns bytes resumed from."""
    final, part = folder / name, folder / f"{name}.part"
    if final.is_file() and final.stat().st_size == size and sha256_file(final) == sha256:
        progress(size)
        return size
    have = part.stat().st_size if part.is_file() else 0
    if have > size:
        part.unlink()
        have = 0
    digest = _hash_prefix(part, have) if have else hashlib.sha256()
    headers = {"If-Range": f'"{sha256}"', "Range": f"bytes={have}-"} if 0 < have < size else {}
    resumed = have
    if have < size:
        with client.stream(f"/v1/emulators/{emulator_id}/files/{name}", headers) as response:
            mode = "ab" if response.status_code == 206 else "wb"
            if response.status_code != 206:
                resumed = have = 0
                digest = hashlib.sha256()
            progress(have)
            with part.open(mode) as f:
                have = _receive(response, f, digest, have, progress)
    if have != size or part.stat().st_size != size or digest.hexdigest() != sha256:
        part.unlink()
        raise ClientError(f"{name}: sha256 mismatch after download (corrupted or changed on the server); "
                          "run the download again")
    os.replace(part, final)
    return resumed


def download_emulator(client: ScaleOTClient, emulator_id: str, out_dir: Path,
                      on_progress: Callable[[DownloadProgress], None] | None = None) -> DownloadResult:
    status = client.emulator(emulator_id).status.state
    if status != JobState.succeeded:
        raise ClientError(f"emulator {emulator_id} is {status}; wait with `scaleot emulators status "
                          f"{emulator_id} --wait` before downloading")
    manifest, manifest_bytes = _fetch_manifest(client, emulator_id)
    out_dir = Path(out_dir)
    folder = out_dir.with_name(f".{out_dir.name}.partial")
    folder.mkdir(parents=True, exist_ok=True)
    total = sum(e.size for e in manifest.files.values())
    done_before = 0
    resumed: dict[str, int] = {}
    for name, entry in sorted(manifest.files.items()):
        if Path(name).name != name:
            raise ClientError(f"the manifest lists an unsafe file name {name!r}; refusing to download")

        def report(done: int, name: str = name, base: int = done_before) -> None:
            if on_progress is not None:
                on_progress(DownloadProgress(name, base + done, total))

        resumed[name] = _download_file(client, emulator_id, name, entry.sha256, entry.size, folder, report)
        done_before += entry.size
    (folder / MANIFEST_NAME).write_bytes(manifest_bytes)
    try:
        verify_emulator(folder, known_sha256={n: e.sha256 for n, e in manifest.files.items()})
    except ArtifactError as exc:
        raise ClientError(str(exc)) from exc
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(folder, out_dir)
    return DownloadResult(out_dir, {k: v for k, v in resumed.items() if v}, total - sum(resumed.values()))
