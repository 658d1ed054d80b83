"""One stage-1 run per importance profile at a time, across every process that shares the profiles folder.

Workers on one machine share it; several machines share it through a ReadWriteMany volume (deploy/).
Without the lock, two workers asked for emulators of the same base model would both train the profile
and overwrite each other's resumable checkpoint. The second one waits, then finds the profile cached.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from model_owner_server.emulators.profile import profiles_root
from model_owner_server.emulators.stage1 import Stage1Cancelled


@contextmanager
def profile_lock(
    pid: str,
    should_stop: Callable[[], bool] | None = None,
    on_wait: Callable[[], None] | None = None,
    poll_s: float = 0.5,
) -> Iterator[None]:
    """Hold the profile's lock; `on_wait` is called once if another process holds it, `should_stop`
    is polled while waiting (Stage1Cancelled when it says stop)."""
    root = profiles_root()
    root.mkdir(parents=True, exist_ok=True)
    with (root / f".{pid}.lock").open("a") as handle:
        waiting = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if should_stop is not None and should_stop():
                    raise Stage1Cancelled(f"stopped while waiting for another process's stage 1 of {pid}") from None
                if not waiting and on_wait is not None:
                    on_wait()
                waiting = True
                time.sleep(poll_s)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
