"""Where artifacts live: a small interface that a local directory and an S3 bucket both implement.

Keys are `/`-separated relative names (`emulators/<id>/manifest.json`). A *prefix* groups the files
of one artifact; `put_dir` publishes a whole artifact at once so readers never see half of one.
The ML code works on local directories, so `local_dir` materialises a prefix (a no-op for the
local store; a cached download for a remote one).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class StoreError(KeyError):
    """A key that does not exist in the store."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    mtime: float


def check_key(key: str) -> str:
    """Refuse absolute keys and `..` segments: a key never escapes the store."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid artifact key {key!r}")
    return key


class ArtifactStore(Protocol):
    def put_dir(self, prefix: str, source: Path) -> None:
        """Publish every file of `source` under `prefix` atomically (replacing what was there)."""

    def put_file(self, key: str, source: Path) -> None:
        """Publish one file atomically (written to a temporary name, then renamed)."""

    def stat(self, key: str) -> ObjectInfo | None:
        """Size and modification time, or None when the key does not exist."""

    def read_range(self, key: str, start: int, end: int, chunk: int = 1 << 20) -> Iterator[bytes]:
        """Bytes start..end (inclusive) in chunks; raises StoreError for a missing key."""

    def list(self, prefix: str) -> list[str]:
        """Keys under `prefix`, sorted."""

    def file_path(self, key: str) -> Path | None:
        """The key's file on this machine's disk when the store keeps it there (the server can then
        send it by path, without reading it through Python), else None."""
        return None

    def local_dir(self, prefix: str) -> Path:
        """A local directory holding the files of `prefix` (for the ML code)."""

    def delete_prefix(self, prefix: str) -> None:
        """Remove every key under `prefix` (missing is fine)."""
