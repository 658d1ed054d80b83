"""A real S3-compatible HTTP server for the tests: moto's standalone server (`python -m moto.server`,
installed by the `dev` extra as `moto[server]`) in a subprocess on a free loopback port.

It speaks the S3 REST protocol (SigV4-signed requests, multipart uploads, ranged GETs, paginated
ListObjectsV2, DeleteObjects) over HTTP, so the store runs through boto3 exactly as against MinIO or AWS.
By default moto accepts any credentials; with INITIAL_NO_AUTH_ACTION_COUNT it verifies the SigV4
signature of every request after the first N against IAM access keys it holds, so the server is started
that way and its first 3 (unauthenticated) requests create an IAM user, an allow-all policy and an access
key: from then on a wrong access key or secret is refused for real (InvalidAccessKeyId,
SignatureDoesNotMatch).

No package found on the registries this project installs from (PyPI, npm, Debian) ships a MinIO
server, and Debian's radosgw needs a Ceph cluster (see model_owner_server/app/README.md). Where the
server cannot start, the tests skip with the reason, except under CI (CI set), where they fail: CI
installs the dev extra, so the server must start there.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

REGION = "us-east-1"
ALLOW_ALL = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}'


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str

    def client(self, access_key: str | None = None, secret_key: str | None = None) -> Any:
        import boto3

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name=REGION,
            aws_access_key_id=access_key or self.access_key, aws_secret_access_key=secret_key or self.secret_key)

    def new_bucket(self) -> str:
        name = f"scaleot-test-{secrets.token_hex(6)}"
        self.client().create_bucket(Bucket=name)
        return name

    def store_kwargs(self) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint, "region": REGION, "aws_access_key_id": self.access_key,
                "aws_secret_access_key": self.secret_key}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"the S3 test server must start in CI: {reason}")
    pytest.skip(f"no S3-compatible test server: {reason}")


@contextmanager
def running_s3_server(log_dir: Path, timeout_s: float = 60.0) -> Iterator[S3Server]:
    try:
        import boto3
        import moto.server  # noqa: F401  (the server runs in a subprocess; this only checks it is installed)
    except ImportError as exc:
        _unavailable(f"{exc}; install the dev extra: pip install -e '.[server,dev]' (it has moto[server])")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3", "PYTHONUNBUFFERED": "1"}
    log_path = log_dir / "moto-server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                _unavailable(f"moto server exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    _unavailable(f"moto server not listening on port {port} after {timeout_s:.0f} s: "
                                 f"{log_path.read_text()[-2000:]}")
                time.sleep(0.1)
        # the 3 unauthenticated requests: a user, its allow-all policy, its access key
        iam = boto3.session.Session().client("iam", endpoint_url=endpoint, region_name=REGION,
                                             aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
        iam.create_user(UserName="scaleot")
        iam.put_user_policy(UserName="scaleot", PolicyName="all", PolicyDocument=ALLOW_ALL)
        key = iam.create_access_key(UserName="scaleot")["AccessKey"]
        yield S3Server(endpoint, key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def local_dir_in_child(kwargs: dict[str, Any]) -> tuple[str, dict[str, int]]:
    """In a separate process: materialise a prefix and report what the returned directory held right then."""
    from model_owner_server.storage.s3 import S3ArtifactStore

    options = dict(kwargs)
    store = S3ArtifactStore(options.pop("bucket"), cache_dir=Path(options.pop("cache_dir")), **options)
    directory = store.local_dir("emulators/e1")
    return str(directory), {p.name: p.stat().st_size for p in sorted(directory.iterdir())}
