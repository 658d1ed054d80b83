"""A private working folder for one request's uploaded parts, under the data directory's tmp/ (same disk as the
artifact store, so publishing is a rename), removed when the request ends whatever happens."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from model_owner_server.app.core.state import AppState


@contextmanager
def request_workdir(state: AppState, prefix: str) -> Iterator[Path]:
    tmp_root = state.settings.data_dir / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=tmp_root))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)
