"""Scratch folders under `<data_dir>/tmp` (uploads being received, emulators being built), and the sweep
that clears the ones a killed process left behind.

A process removes its scratch folder when it is done, whatever happens, except when it is killed
(`kill -9`, out of memory): the folder then stays, with up to an upload's or an emulator's worth of
bytes. So each folder is flock()ed by its owner while in use; the kernel drops the lock when the owner
dies, however it dies. At start-up the API and the worker remove every folder whose lock they can take
(no live process uses it) and that is older than a minute (a folder is locked a moment after it is
made). Stage-1 work folders (`stage1-<job>`) are the stage-1 launcher's: left alone.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("scaleot.storage")

MIN_AGE_S = 60.0
KEEP_PREFIXES = ("stage1-",)


def scratch_root(data_dir: Path) -> Path:
    return data_dir / "tmp"


@contextmanager
def scratch_dir(root: Path, prefix: str) -> Iterator[Path]:
    """A new folder under `root`, locked while the block runs, removed after it."""
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    fd = os.open(work, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held until the close below, or until this process dies
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)
        os.close(fd)


def _unused(folder: Path) -> bool:
    """True when no live process holds the folder's lock (its owner finished or was killed)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # also releases the lock, if taken
    return True


def sweep_stale(root: Path, min_age_s: float = MIN_AGE_S) -> list[str]:
    """Remove the scratch folders under `root` that a killed process left; returns their names."""
    if not root.is_dir():
        return []
    now = time.time()
    removed: list[str] = []
    for entry in sorted(root.iterdir()):
        try:
            if not entry.is_dir() or entry.is_symlink() or entry.name.startswith(KEEP_PREFIXES):
                continue
            if now - entry.stat().st_mtime < min_age_s or not _unused(entry):
                continue
        except FileNotFoundError:  # another process swept it just now
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry.name)
    if removed:
        log.info("removed %d stale scratch folder(s) under %s: %s", len(removed), root, ", ".join(removed[:20]))
    return removed


def sweep_at_startup(data_dir: Path, store: object) -> None:
    """What the API and the worker run when they start: stale scratch folders, and the local store's
    half-published artifacts. A failure here is logged, never a reason not to start."""
    from model_owner_server.storage.local import LocalArtifactStore, sweep_partial

    try:
        sweep_stale(scratch_root(data_dir))
        if isinstance(store, LocalArtifactStore):
            partial = sweep_partial(store)
            if partial:
                log.info("removed %d half-published artifact folder(s): %s", len(partial), ", ".join(partial[:20]))
    except OSError as exc:
        log.warning("could not clear stale temporaries under %s: %s", data_dir, exc)
