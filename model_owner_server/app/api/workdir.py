"""A private working folder for one request's uploaded parts, under the data directory's tmp/ (same disk as the
artifact store, so publishing is a rename), removed when the request ends whatever happens; locked while in
use, so that one a killed API process left is cleared at the next start-up (`storage.scratch`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from model_owner_server.app.core.state import AppState
from model_owner_server.storage.scratch import scratch_dir, scratch_root


@contextmanager
def request_workdir(state: AppState, prefix: str) -> Iterator[Path]:
    with scratch_dir(scratch_root(state.settings.data_dir), prefix) as work:
        yield work
