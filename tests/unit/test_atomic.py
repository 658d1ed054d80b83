"""shared.atomic: a file is replaced whole, with the mode asked for, and a failed write leaves no trace."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from shared.atomic import atomic_file, atomic_write_text


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_write_replaces_the_file_with_the_mode_asked_for(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "meta.json"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two" and _mode(target) == 0o644
    atomic_write_text(target, "secret", mode=0o600)
    assert _mode(target) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["meta.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path) -> None:
    target = tmp_path / "rows.jsonl"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["rows.jsonl"]
