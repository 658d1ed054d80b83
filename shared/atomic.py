"""Atomic writes of files and directories: build in a temporary sibling, then rename over the target.

A crash mid-write leaves either the old file or directory or the new one, never a half-written one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a temporary directory next to `target`; on success it replaces `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            trash = target.with_name(f".{target.name}.old")
            shutil.rmtree(trash, ignore_errors=True)
            os.replace(target, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def atomic_file(target: Path, mode: int | None = 0o644) -> Iterator[Path]:
    """Yield the path of an empty temporary file next to `target`; on success it replaces `target`.

    The file is created private (0600, as `mkstemp` makes it) and gets `mode` just before the rename,
    so a reader never sees a partial file and a private file is never readable by others on the way.
    `mode=None` keeps 0600. On an error the temporary file is removed and `target` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(target: Path, text: str, mode: int | None = 0o644) -> None:
    """Write `text` (UTF-8) to `target` atomically (see `atomic_file`)."""
    with atomic_file(target, mode) as tmp:
        tmp.write_text(text, encoding="utf-8")
