"""The embedded default: artifacts as files under one directory, published by atomic rename."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from model_owner_server.storage.base import ObjectInfo, StoreError, check_key
from shared.atomic import atomic_file

PARTIAL_AGE_S = 3600.0


class LocalArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put_dir(self, prefix: str, source: Path) -> None:
        target = self._path(prefix)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            for path in sorted(Path(source).iterdir()):
                if path.is_file():
                    shutil.copyfile(path, tmp / path.name)
            if target.exists():
                trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
                os.replace(target, trash / "gone")
                shutil.rmtree(trash, ignore_errors=True)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def put_file(self, key: str, source: Path) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(target, mode=None) as tmp:
            shutil.copyfile(source, tmp)

    def stat(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        if not path.is_file():
            return None
        st = path.stat()
        return ObjectInfo(key=key, size=st.st_size, mtime=st.st_mtime)

    def read_range(self, key: str, start: int, end: int, chunk: int = 1 << 20) -> Iterator[bytes]:
        path = self._path(key)
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise StoreError(key) from None
        with handle:
            handle.seek(start)
            remaining = end - start + 1
            while remaining > 0:
                data = handle.read(min(chunk, remaining))
                if not data:
                    return
                remaining -= len(data)
                yield data

    def file_path(self, key: str) -> Path | None:
        path = self._path(key).resolve()
        return path if path.is_file() else None

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file())

    def local_dir(self, prefix: str) -> Path:
        return self._path(prefix)

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self._path(prefix), ignore_errors=True)


def sweep_partial(store: LocalArtifactStore, min_age_s: float = PARTIAL_AGE_S) -> list[str]:
    """Remove what `put_dir` left when its process was killed mid-publish: the hidden `.<name>.*` folders
    beside the artifacts, older than `min_age_s` (a publish copies for seconds, not an hour)."""
    now = time.time()
    removed: list[str] = []
    for kind in (p for p in store.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for entry in kind.iterdir():
            try:
                stale = entry.name.startswith(".") and entry.is_dir() and now - entry.stat().st_mtime > min_age_s
            except FileNotFoundError:
                continue
            if stale:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(f"{kind.name}/{entry.name}")
    return removed
