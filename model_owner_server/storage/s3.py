"""Artifacts in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW, ...), for several API replicas and
workers on different machines.

Keys map to objects `<prefix>/<key>` in one bucket. S3 has no atomic multi-object write, so `put_dir`
uploads every file first, the manifest last, and only then deletes the keys an older version had and
this one does not: a reader that goes by the manifest (and the job state in the database, which is
set after `put_dir` returns) never sees a half-published artifact. Each single object is replaced
atomically by S3 itself; big files go up as multipart uploads.

`local_dir` downloads a prefix into `cache_dir/<prefix name>-<hash>/v-<fingerprint>/`, where the
fingerprint covers every object's name, ETag and size: a repeated call only lists the prefix and reuses
the download; a replaced artifact gets a new version directory. Downloads go to a temporary directory
that is renamed into place, so two processes sharing the cache never see half a directory. Versions
not used for `cache_grace_s` are pruned.

Credentials come from the standard AWS chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE,
an instance or pod role). Configuration problems (missing bucket, rejected credentials, unreachable
endpoint) raise `S3StoreError` with a message saying what to fix; the constructor checks them once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from model_owner_server.storage.base import ObjectInfo, StoreError, check_key

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

MANIFEST_NAME = "manifest.json"  # shared.manifest.MANIFEST_NAME; published last by put_dir
MAX_PAGE = 1000  # ListObjectsV2 returns, DeleteObjects takes, at most 1000 keys
NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
BAD_CREDENTIALS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
                   "InvalidClientTokenId", "TokenRefreshRequired"}
WRONG_REGION = {"PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"}
MiB = 1024 * 1024


class S3StoreError(RuntimeError):
    """The S3 store cannot work as configured (bucket, credentials, endpoint); the message says what to fix."""


@dataclass(frozen=True)
class _Object:
    name: str  # relative to the listed prefix
    etag: str
    size: int


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int | None:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if status is not None else None


def _cache_name(prefix: str) -> str:
    readable = prefix.replace("/", "_")[:80]
    return f"{readable}-{hashlib.sha256(prefix.encode()).hexdigest()[:12]}"


class S3ArtifactStore:
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        *,
        cache_dir: Path,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        multipart_threshold: int = 64 * MiB,
        multipart_chunksize: int = 16 * MiB,
        max_concurrency: int = 8,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_attempts: int = 3,
        addressing_style: Literal["auto", "path", "virtual"] | None = None,
        cache_grace_s: float = 600.0,
        page_size: int = MAX_PAGE,
        verify: bool = True,
    ) -> None:
        """`aws_*` override the standard credential chain (tests; deployments use the environment).
        `addressing_style` defaults to `path` with a custom endpoint (MinIO, Ceph) and `auto` on AWS.
        `page_size` (<= 1000) is the keys per ListObjectsV2 page and per DeleteObjects batch.
        `verify` checks the bucket and the credentials now (one ListObjectsV2)."""
        if not bucket:
            raise S3StoreError("no S3 bucket configured; set SCALEOT_S3_BUCKET")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            try:
                check_key(self.prefix)
            except ValueError:
                raise S3StoreError(f"invalid S3 key prefix {prefix!r} (SCALEOT_S3_PREFIX): use `/`-separated "
                                   "names without empty, `.` or `..` segments") from None
        self._root = f"{self.prefix}/" if self.prefix else ""
        self.endpoint_url = endpoint_url or None
        self.region = region or None
        self.cache_dir = Path(cache_dir)
        self.cache_grace_s = cache_grace_s
        self.page_size = max(1, min(page_size, MAX_PAGE))
        self._where = (f"endpoint {self.endpoint_url}" if self.endpoint_url
                       else f"AWS S3 ({self.region or 'default region'})")
        config = Config(
            connect_timeout=connect_timeout, read_timeout=read_timeout,
            retries={"max_attempts": max_attempts, "mode": "standard"},
            s3={"addressing_style": addressing_style or ("path" if self.endpoint_url else "auto")},
            # S3-compatible servers differ in their support of the newer default integrity headers;
            # send checksums only where the API requires them when talking to one.
            request_checksum_calculation="when_required" if self.endpoint_url else "when_supported",
            response_checksum_validation="when_required" if self.endpoint_url else "when_supported",
            max_pool_connections=max(10, max_concurrency * 2),
        )
        session = boto3.session.Session(
            aws_access_key_id=aws_access_key_id, aws_secret_access_key=aws_secret_access_key,
            aws_session_token=aws_session_token, region_name=self.region,
        )
        try:
            self._client: S3Client = session.client("s3", endpoint_url=self.endpoint_url, config=config)
        except ValueError as exc:  # e.g. an endpoint URL without a scheme
            raise S3StoreError(f"invalid SCALEOT_S3_ENDPOINT_URL {endpoint_url!r}: {exc}; "
                               "use a full URL such as http://minio:9000") from exc
        self._transfer = TransferConfig(multipart_threshold=multipart_threshold,
                                        multipart_chunksize=multipart_chunksize, max_concurrency=max_concurrency)
        if verify:
            self.check()

    def __repr__(self) -> str:
        return f"S3ArtifactStore(s3://{self.bucket}/{self.prefix} at {self._where})"

    # errors

    def _explain(self, exc: BaseException, action: str) -> S3StoreError:
        bucket = f"bucket {self.bucket!r} at {self._where}"
        if isinstance(exc, S3UploadFailedError) and isinstance(exc.__context__, ClientError | BotoCoreError):
            exc = exc.__context__
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return S3StoreError(f"{action}: no usable AWS credentials ({exc}); set AWS_ACCESS_KEY_ID and "
                                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or give the machine/pod a role)")
        if isinstance(exc, BotoConnectionError):  # refused, DNS, TLS, connect timeout
            return S3StoreError(f"{action}: cannot reach the S3 {self._where} ({exc}); check "
                                "SCALEOT_S3_ENDPOINT_URL and SCALEOT_S3_REGION, and that the server is up")
        if isinstance(exc, ClientError):
            code, status = _code(exc), _status(exc)
            if code == "NoSuchBucket" or (code in NOT_FOUND and action == "check the bucket"):
                return S3StoreError(f"{action}: {bucket} does not exist; create it or set SCALEOT_S3_BUCKET "
                                    "(and SCALEOT_S3_ENDPOINT_URL) to an existing bucket")
            if code in BAD_CREDENTIALS:
                return S3StoreError(f"{action}: the S3 {self._where} rejected the credentials ({code}); check "
                                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN)")
            if code in WRONG_REGION or status == 301:
                return S3StoreError(f"{action}: {bucket} is in another region ({code}); set SCALEOT_S3_REGION "
                                    "to the bucket's region")
            if code == "AccessDenied" or status == 403:
                return S3StoreError(f"{action}: access denied to {bucket} ({code or status}); the credentials need "
                                    "s3:ListBucket, s3:GetObject, s3:PutObject and s3:DeleteObject on it")
        return S3StoreError(f"{action} in {bucket}: {exc}")

    @contextmanager
    def _errors(self, action: str, missing_key: str | None = None) -> Iterator[None]:
        """Translate botocore errors; a missing object becomes StoreError(missing_key) when one is given."""
        try:
            yield
        except ClientError as exc:
            if missing_key is not None and _code(exc) in NOT_FOUND:
                raise StoreError(missing_key) from None
            raise self._explain(exc, action) from exc
        except (BotoCoreError, S3UploadFailedError) as exc:
            raise self._explain(exc, action) from exc

    def check(self) -> None:
        """Fail now, with a message saying what to fix, if the bucket is missing or unreachable, or the
        credentials are missing or rejected (ListObjectsV2 names the cause, HeadBucket only a status)."""
        with self._errors("check the bucket"):
            self._client.list_objects_v2(Bucket=self.bucket, Prefix=self._root, MaxKeys=1)

    # keys

    def _obj(self, key: str) -> str:
        return self._root + check_key(key)

    def _objects(self, prefix: str) -> list[_Object]:
        """Every object under `prefix/` (names relative to it), by paginated ListObjectsV2."""
        base = self._obj(prefix) + "/"
        found: list[_Object] = []
        with self._errors(f"list {prefix}"):
            for page in self._client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=base, PaginationConfig={"PageSize": self.page_size}):
                for item in page.get("Contents", []):
                    name = item["Key"][len(base):]
                    if name and not name.endswith("/"):  # skip "folder" marker objects
                        found.append(_Object(name, item.get("ETag", ""), int(item.get("Size", 0))))
        return sorted(found, key=lambda o: o.name)

    def _upload(self, key: str, source: Path) -> None:
        with self._errors(f"upload {key}"):
            self._client.upload_file(str(source), self.bucket, self._obj(key), Config=self._transfer)

    def _delete(self, keys: list[str]) -> None:
        for i in range(0, len(keys), self.page_size):
            batch = keys[i:i + self.page_size]
            with self._errors(f"delete {batch[0]}..."):
                response = self._client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": self._obj(k)} for k in batch], "Quiet": True})
            errors = [e for e in response.get("Errors", []) if e.get("Code") not in NOT_FOUND]
            if errors:
                first = errors[0]
                raise S3StoreError(f"could not delete {len(errors)} object(s) from bucket {self.bucket!r}, e.g. "
                                   f"{first.get('Key')}: {first.get('Code')} {first.get('Message')}")

    # the ArtifactStore interface

    def put_dir(self, prefix: str, source: Path) -> None:
        check_key(prefix)
        files = sorted((p for p in Path(source).iterdir() if p.is_file()),
                       key=lambda p: (p.name == MANIFEST_NAME, p.name))  # the manifest last
        stale = {o.name for o in self._objects(prefix)}
        for path in files:
            self._upload(f"{prefix}/{path.name}", path)
            stale.discard(path.name)
        self._delete([f"{prefix}/{name}" for name in sorted(stale)])

    def put_file(self, key: str, source: Path) -> None:
        check_key(key)
        self._upload(key, Path(source))

    def stat(self, key: str) -> ObjectInfo | None:
        obj = self._obj(key)
        try:
            with self._errors(f"stat {key}", missing_key=key):
                head = self._client.head_object(Bucket=self.bucket, Key=obj)
        except StoreError:
            return None
        return ObjectInfo(key=key, size=int(head["ContentLength"]), mtime=head["LastModified"].timestamp())

    def read_range(self, key: str, start: int, end: int, chunk: int = 1 << 20) -> Iterator[bytes]:
        obj = self._obj(key)
        if end < start:  # S3 would ignore such a Range and send the whole object
            return
        with self._errors(f"read {key}", missing_key=key):
            try:
                response = self._client.get_object(Bucket=self.bucket, Key=obj, Range=f"bytes={start}-{end}")
            except ClientError as exc:
                if _code(exc) == "InvalidRange":  # start past the end: nothing, like a local file
                    return
                raise
            body = response["Body"]
            try:
                yield from body.iter_chunks(chunk)
            finally:
                body.close()

    def file_path(self, key: str) -> Path | None:
        return None  # objects live in the bucket; downloads stream them

    def local_dir(self, prefix: str) -> Path:
        check_key(prefix)
        base = self.cache_dir / _cache_name(prefix)
        for _attempt in range(3):
            objects = self._objects(prefix)
            if not objects:
                self._prune(base, keep=None)
                return base / "missing"  # like the local store: a path that does not exist
            for o in objects:
                check_key(o.name)  # never write outside the cache
            target = base / f"v-{self._fingerprint(objects)}"
            if target.is_dir():
                try:
                    os.utime(target)  # in use: keep it past the grace period
                except FileNotFoundError:
                    continue  # pruned by another process just now: list again
                self._prune(base, keep=target)
                return target
            base.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=base))
            try:
                for o in objects:
                    dest = tmp / o.name
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with self._errors(f"download {prefix}/{o.name}", missing_key=f"{prefix}/{o.name}"):
                        self._client.download_file(self.bucket, self._obj(f"{prefix}/{o.name}"), str(dest),
                                                    Config=self._transfer)
                    if dest.stat().st_size != o.size:
                        raise S3StoreError(f"downloaded {prefix}/{o.name} has {dest.stat().st_size} bytes, the "
                                           f"listing said {o.size}")
                if self._fingerprint(self._objects(prefix)) != target.name[2:]:
                    continue  # replaced while we downloaded: start over
                try:
                    os.rename(tmp, target)
                except OSError:
                    if not target.is_dir():  # else another process published the same version first
                        raise
                self._prune(base, keep=target)
                return target
            except StoreError:
                continue  # an object vanished while we downloaded: list again
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        raise S3StoreError(f"{prefix} kept changing while it was downloaded from bucket {self.bucket!r}; try again")

    def delete_prefix(self, prefix: str) -> None:
        check_key(prefix)
        self._delete([f"{prefix}/{o.name}" for o in self._objects(prefix)])

    def list(self, prefix: str) -> list[str]:
        check_key(prefix)
        return sorted(f"{prefix}/{o.name}" for o in self._objects(prefix))

    # the download cache

    @staticmethod
    def _fingerprint(objects: Sequence[_Object]) -> str:
        listing = json.dumps([[o.name, o.etag, o.size] for o in objects])
        return hashlib.sha256(listing.encode()).hexdigest()[:24]

    def _prune(self, base: Path, keep: Path | None) -> None:
        """Remove versions of this prefix unused for `cache_grace_s` (and abandoned partial downloads)."""
        if not base.is_dir():
            return
        now = time.time()
        for entry in base.iterdir():
            if entry == keep or not entry.is_dir():
                continue
            grace = self.cache_grace_s if entry.name.startswith("v-") else max(self.cache_grace_s, 6 * 3600.0)
            try:
                if now - entry.stat().st_mtime > grace:
                    shutil.rmtree(entry, ignore_errors=True)
            except FileNotFoundError:
                pass
