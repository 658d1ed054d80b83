"""One contract for every ArtifactStore: the local directory and S3 (against a real S3-compatible HTTP
server, see s3_server.py). Plus what only S3 has: its clear configuration errors, multipart uploads,
the download cache shared by processes, the key prefix."""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from model_owner_server.settings import Settings
from model_owner_server.storage import s3
from model_owner_server.storage.base import ArtifactStore, StoreError
from model_owner_server.storage.factory import make_store
from model_owner_server.storage.local import LocalArtifactStore
from model_owner_server.storage.s3 import S3ArtifactStore, S3StoreError
from shared import manifest
from tests.service.conftest import ADMIN_KEY
from tests.service.s3_server import REGION, S3Server, free_port, local_dir_in_child

MiB = 1024 * 1024
PART = 5 * MiB  # the smallest part S3 accepts


def s3_store(server: S3Server, tmp_path: Path, bucket: str | None = None, **kwargs: Any) -> S3ArtifactStore:
    options: dict[str, Any] = {"prefix": "deploy-a", "cache_dir": tmp_path / "s3-cache",
                               "multipart_threshold": PART, "multipart_chunksize": PART, **server.store_kwargs()}
    options.update(kwargs)
    return S3ArtifactStore(bucket or server.new_bucket(), **options)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return LocalArtifactStore(tmp_path / "root")
    return s3_store(request.getfixturevalue("s3_server"), tmp_path)


def write_dir(path: Path, files: dict[str, bytes]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for old in path.iterdir():
        old.unlink()
    for name, data in files.items():
        (path / name).write_bytes(data)
    return path


def read_all(store: ArtifactStore, key: str) -> bytes:
    info = store.stat(key)
    assert info is not None, key
    return b"".join(store.read_range(key, 0, info.size - 1))


def tree(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_put_dir_replaces_and_removes_stale_files(store: ArtifactStore, tmp_path: Path) -> None:
    v1 = {"a.bin": b"first a", "b.bin": b"only in v1", "manifest.json": b'{"v": 1}'}
    store.put_dir("emulators/e1", write_dir(tmp_path / "src", v1))
    assert store.list("emulators/e1") == ["emulators/e1/a.bin", "emulators/e1/b.bin", "emulators/e1/manifest.json"]
    v2 = {"a.bin": b"second, longer a", "c.bin": b"new in v2", "manifest.json": b'{"v": 2}'}
    store.put_dir("emulators/e1", write_dir(tmp_path / "src", v2))
    assert store.list("emulators/e1") == ["emulators/e1/a.bin", "emulators/e1/c.bin", "emulators/e1/manifest.json"]
    assert store.stat("emulators/e1/b.bin") is None
    for name, data in v2.items():
        assert read_all(store, f"emulators/e1/{name}") == data
    subdir = tmp_path / "src" / "nested"  # like the local store: the files of the directory, not subdirectories
    subdir.mkdir()
    (subdir / "x.bin").write_bytes(b"x")
    store.put_dir("emulators/e2", tmp_path / "src")
    assert store.list("emulators/e2") == ["emulators/e2/a.bin", "emulators/e2/c.bin", "emulators/e2/manifest.json"]


def test_put_file_and_stat(store: ArtifactStore, tmp_path: Path) -> None:
    source = tmp_path / "data.jsonl"
    source.write_bytes(b'{"text": "hi"}\n')
    before = time.time()
    store.put_file("evaluations/ev1/data.jsonl", source)
    info = store.stat("evaluations/ev1/data.jsonl")
    assert info is not None and info.key == "evaluations/ev1/data.jsonl" and info.size == source.stat().st_size
    assert before - 5 < info.mtime < time.time() + 5
    source.write_bytes(b"replaced")
    store.put_file("evaluations/ev1/data.jsonl", source)
    assert read_all(store, "evaluations/ev1/data.jsonl") == b"replaced"
    assert store.stat("evaluations/ev1/other.jsonl") is None and store.stat("nothing/here") is None


def test_read_range_edges(store: ArtifactStore, tmp_path: Path) -> None:
    data = bytes(range(256)) * 4  # 1024 bytes
    store.put_file("blobs/x.bin", write_dir(tmp_path / "src", {"x.bin": data}) / "x.bin")

    def read(start: int, end: int, chunk: int = 1 << 20) -> bytes:
        return b"".join(store.read_range("blobs/x.bin", start, end, chunk))

    assert read(0, 1023) == data and read(0, 0) == data[:1] and read(1023, 1023) == data[-1:]
    assert read(100, 5000) == data[100:]  # an end past the end of the object is clamped
    assert read(1024, 2000) == b"" and read(10, 5) == b""  # nothing past the end; an empty range is empty
    chunks = list(store.read_range("blobs/x.bin", 3, 1000, chunk=64))  # a range of many chunks
    assert b"".join(chunks) == data[3:1001] and len(chunks) >= 998 // 64 and all(len(c) <= 64 for c in chunks)
    with pytest.raises(StoreError):
        b"".join(store.read_range("blobs/missing.bin", 0, 10))


def test_multipart_sized_file(store: ArtifactStore, tmp_path: Path) -> None:
    big = os.urandom(2 * PART + 12345)  # three parts at a 5 MiB part size
    source = write_dir(tmp_path / "src", {"weights.bin": big, "manifest.json": b"{}"})
    store.put_dir("emulators/big", source)
    info = store.stat("emulators/big/weights.bin")
    assert info is not None and info.size == len(big)
    assert b"".join(store.read_range("emulators/big/weights.bin", PART - 10, PART + 9, chunk=7)) == \
        big[PART - 10:PART + 10]  # across a part boundary
    assert (store.local_dir("emulators/big") / "weights.bin").read_bytes() == big
    if isinstance(store, S3ArtifactStore):  # it really went up as a multipart upload
        head = store._client.head_object(Bucket=store.bucket, Key="deploy-a/emulators/big/weights.bin")
        assert head["ETag"].strip('"').endswith("-3"), head["ETag"]


def test_list_is_sorted_recursive_and_exact_about_the_prefix(store: ArtifactStore, tmp_path: Path) -> None:
    source = write_dir(tmp_path / "src", {"f": b"1"}) / "f"
    for key in ("adapters/a1/z.bin", "adapters/a1/sub/deep.bin", "adapters/a1/b.bin", "adapters/a10/b.bin"):
        store.put_file(key, source)
    assert store.list("adapters/a1") == ["adapters/a1/b.bin", "adapters/a1/sub/deep.bin", "adapters/a1/z.bin"]
    assert store.list("adapters/a10") == ["adapters/a10/b.bin"] and store.list("adapters/none") == []
    assert tree(store.local_dir("adapters/a1")) == {"b.bin": b"1", "sub/deep.bin": b"1", "z.bin": b"1"}


def test_local_dir_is_cached_and_follows_a_replacement(store: ArtifactStore, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    v1 = {"a.bin": b"one", "b.bin": b"only in v1", "manifest.json": b'{"v": 1}'}
    store.put_dir("emulators/e1", write_dir(tmp_path / "src", v1))
    first = store.local_dir("emulators/e1")
    assert tree(first) == v1
    downloads: list[str] = []
    if isinstance(store, S3ArtifactStore):
        real = store._client.download_file

        def counting(bucket: str, key: str, filename: str, **kwargs: Any) -> None:
            downloads.append(key)
            real(bucket, key, filename, **kwargs)

        monkeypatch.setattr(store._client, "download_file", counting)
    assert store.local_dir("emulators/e1") == first and tree(first) == v1
    assert downloads == []  # the second call only listed the prefix
    v2 = {"a.bin": b"two!", "manifest.json": b'{"v": 2}'}
    store.put_dir("emulators/e1", write_dir(tmp_path / "src", v2))
    second = store.local_dir("emulators/e1")
    assert tree(second) == v2
    if isinstance(store, S3ArtifactStore):
        assert sorted(downloads) == ["deploy-a/emulators/e1/a.bin", "deploy-a/emulators/e1/manifest.json"]
        assert second != first and tree(first) == v1  # an old version stays for readers within the grace period
        assert not [p for p in second.parent.iterdir() if p.name.startswith(".partial-")]
    assert not store.local_dir("emulators/never").exists()


def test_delete_prefix(store: ArtifactStore, tmp_path: Path) -> None:
    source = write_dir(tmp_path / "src", {"a.bin": b"a", "b.bin": b"b"})
    store.put_dir("adapters/a1", source)
    store.put_dir("adapters/a10", source)
    store.delete_prefix("adapters/a1")
    assert store.list("adapters/a1") == [] and store.stat("adapters/a1/a.bin") is None
    assert store.list("adapters/a10") == ["adapters/a10/a.bin", "adapters/a10/b.bin"]  # a sibling, untouched
    store.delete_prefix("adapters/a1")  # missing is fine
    store.delete_prefix("adapters/never")


def test_invalid_keys_are_refused(store: ArtifactStore, tmp_path: Path) -> None:
    source = write_dir(tmp_path / "src", {"a.bin": b"a"})
    for bad in ("../escape", "/abs", "a/../../b", "", "a//b", "a/./b"):
        with pytest.raises(ValueError):
            store.stat(bad)
        with pytest.raises(ValueError):
            store.put_file(bad, source / "a.bin")
        with pytest.raises(ValueError):
            store.put_dir(bad, source)
        with pytest.raises(ValueError):
            b"".join(store.read_range(bad, 0, 1))
        with pytest.raises(ValueError):
            store.list(bad)
        with pytest.raises(ValueError):
            store.local_dir(bad)
        with pytest.raises(ValueError):
            store.delete_prefix(bad)


# S3 only


def test_s3_publishes_the_manifest_last_under_the_configured_prefix(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = s3_server.new_bucket()
    store = s3_store(s3_server, tmp_path, bucket)
    order: list[str] = []
    real = store._upload
    monkeypatch.setattr(store, "_upload", lambda key, source: (order.append(key), real(key, source)))
    store.put_dir("emulators/e1", write_dir(tmp_path / "src", {"manifest.json": b"{}", "a.bin": b"a", "z.bin": b"z"}))
    assert order == ["emulators/e1/a.bin", "emulators/e1/z.bin", "emulators/e1/manifest.json"]
    assert s3.MANIFEST_NAME == manifest.MANIFEST_NAME
    raw = s3_server.client().list_objects_v2(Bucket=bucket)
    assert sorted(o["Key"] for o in raw["Contents"]) == [
        "deploy-a/emulators/e1/a.bin", "deploy-a/emulators/e1/manifest.json", "deploy-a/emulators/e1/z.bin"]
    other = s3_store(s3_server, tmp_path, bucket, prefix="deploy-b")  # another deployment in the same bucket
    assert other.list("emulators/e1") == [] and other.stat("emulators/e1/a.bin") is None


def test_s3_lists_and_deletes_page_by_page(s3_server: S3Server, tmp_path: Path) -> None:
    store = s3_store(s3_server, tmp_path, page_size=2)
    calls: list[str] = []
    for operation in ("ListObjectsV2", "DeleteObjects"):
        store._client.meta.events.register(f"before-call.s3.{operation}", lambda model, **_: calls.append(model.name))
    files = {f"f{i}.bin": bytes([i]) for i in range(5)}
    store.put_dir("adapters/a1", write_dir(tmp_path / "src", files))
    calls.clear()
    assert store.list("adapters/a1") == [f"adapters/a1/f{i}.bin" for i in range(5)]
    assert calls == ["ListObjectsV2"] * 3  # 2 + 2 + 1
    assert tree(store.local_dir("adapters/a1")) == files
    calls.clear()
    store.delete_prefix("adapters/a1")
    assert calls == ["ListObjectsV2"] * 3 + ["DeleteObjects"] * 3 and store.list("adapters/a1") == []


def test_s3_local_dir_from_two_processes_at_once(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.new_bucket()
    store = s3_store(s3_server, tmp_path, bucket)
    files = {f"part{i}.bin": os.urandom(300_000 + i) for i in range(6)} | {"manifest.json": b"{}"}
    store.put_dir("emulators/e1", write_dir(tmp_path / "src", files))
    kwargs = {"bucket": bucket, "prefix": "deploy-a", "cache_dir": str(tmp_path / "shared-cache"),
              **s3_server.store_kwargs()}
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        results = list(pool.map(local_dir_in_child, [kwargs, kwargs]))
    (path_a, seen_a), (path_b, seen_b) = results
    assert path_a == path_b  # one version directory, published once by rename
    expected = {name: len(data) for name, data in files.items()}
    assert seen_a == expected and seen_b == expected  # neither saw half a directory
    assert tree(Path(path_a)) == files
    assert [p.name for p in Path(path_a).parent.iterdir()] == [Path(path_a).name]  # no partial download left


def test_s3_prunes_unused_cache_versions(s3_server: S3Server, tmp_path: Path) -> None:
    store = s3_store(s3_server, tmp_path, cache_grace_s=0.0)
    store.put_dir("adapters/a1", write_dir(tmp_path / "src", {"a.bin": b"1"}))
    old = store.local_dir("adapters/a1")
    time.sleep(0.05)
    store.put_dir("adapters/a1", write_dir(tmp_path / "src", {"a.bin": b"2"}))
    new = store.local_dir("adapters/a1")
    assert not old.exists() and tree(new) == {"a.bin": b"2"}
    store.delete_prefix("adapters/a1")
    time.sleep(0.05)
    assert not store.local_dir("adapters/a1").exists() and not new.exists()


def test_s3_missing_bucket_is_a_clear_error(s3_server: S3Server, tmp_path: Path) -> None:
    with pytest.raises(S3StoreError, match=r"bucket 'no-such-bucket' at endpoint http://127\.0\.0\.1:\d+ does "
                                           r"not exist; create it or set SCALEOT_S3_BUCKET"):
        s3_store(s3_server, tmp_path, "no-such-bucket")


def test_s3_wrong_credentials_are_a_clear_error(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.new_bucket()
    for key, secret, code in ((f"AKIA{'X' * 16}", s3_server.secret_key, "InvalidAccessKeyId"),
                              (s3_server.access_key, "not-the-secret", "SignatureDoesNotMatch")):
        with pytest.raises(S3StoreError, match=rf"rejected the credentials \({code}\); check AWS_ACCESS_KEY_ID "
                                               "and AWS_SECRET_ACCESS_KEY"):
            s3_store(s3_server, tmp_path, bucket, aws_access_key_id=key, aws_secret_access_key=secret)


def test_s3_missing_credentials_are_a_clear_error(s3_server: S3Server, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(S3StoreError, match=r"no usable AWS credentials.*set AWS_ACCESS_KEY_ID and AWS_SECRET"):
        S3ArtifactStore("any-bucket", endpoint_url=s3_server.endpoint, region=REGION, cache_dir=tmp_path)


def test_s3_unreachable_endpoint_is_a_clear_error(s3_server: S3Server, tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(S3StoreError, match=r"cannot reach the S3 endpoint http://127\.0\.0\.1:\d+ .*check "
                                           "SCALEOT_S3_ENDPOINT_URL"):
        s3_store(s3_server, tmp_path, "any-bucket", endpoint_url=endpoint, connect_timeout=1.0)
    assert time.monotonic() - started < 30
    with pytest.raises(S3StoreError, match="invalid SCALEOT_S3_ENDPOINT_URL"):
        s3_store(s3_server, tmp_path, "any-bucket", endpoint_url="127.0.0.1:9000")


def test_settings_and_factory(s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base: dict[str, Any] = {"data_dir": tmp_path / "data", "admin_key": ADMIN_KEY}
    assert isinstance(make_store(Settings(**base)), LocalArtifactStore)
    with pytest.raises(ValidationError, match="SCALEOT_STORAGE=s3 needs SCALEOT_S3_BUCKET"):
        Settings(**base, storage="s3")
    monkeypatch.setenv("SCALEOT_STORAGE", "s3")
    with pytest.raises(ValidationError, match="SCALEOT_S3_BUCKET"):
        Settings(**base)
    bucket = s3_server.new_bucket()
    monkeypatch.setenv("SCALEOT_S3_BUCKET", bucket)
    monkeypatch.setenv("SCALEOT_S3_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("SCALEOT_S3_REGION", REGION)
    monkeypatch.setenv("SCALEOT_S3_PREFIX", "prod/")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    store = make_store(Settings(**base))
    assert isinstance(store, S3ArtifactStore)
    assert (store.bucket, store.prefix, store.cache_dir) == (bucket, "prod", tmp_path / "data" / "s3-cache")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(S3StoreError, match="SignatureDoesNotMatch"):
        make_store(Settings(**base))
