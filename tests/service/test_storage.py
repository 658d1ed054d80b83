"""The local artifact store: atomic publication, ranged reads, keys that cannot escape the root."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_owner_server.app.api.ranges import ByteRange, Unsatisfiable, parse_range, range_applies
from model_owner_server.storage.local import LocalArtifactStore


def test_put_dir_replaces_atomically_and_reads_ranges(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "root")
    for version in (b"first version", b"second, longer version"):
        src = tmp_path / "src"
        src.mkdir(exist_ok=True)
        (src / "a.bin").write_bytes(version)
        store.put_dir("emulators/e1", src)
    assert store.list("emulators/e1") == ["emulators/e1/a.bin"]
    info = store.stat("emulators/e1/a.bin")
    assert info is not None and info.size == len(b"second, longer version")
    assert b"".join(store.read_range("emulators/e1/a.bin", 8, 13, chunk=2)) == b"longer"
    assert not [p for p in (tmp_path / "root" / "emulators").iterdir() if p.name.startswith(".")]  # no leftovers
    store.put_file("evaluations/x/data.jsonl", src / "a.bin")
    assert store.stat("evaluations/x/data.jsonl") is not None
    store.delete_prefix("emulators/e1")
    assert store.stat("emulators/e1/a.bin") is None and store.list("emulators/e1") == []
    for bad in ("../escape", "/abs", "a/../../b", "", "a//b"):
        with pytest.raises(ValueError):
            store.stat(bad)


def test_range_parsing() -> None:
    assert parse_range(None, 100) is None
    assert parse_range("bytes=0-9", 100) == ByteRange(0, 9)
    assert parse_range("bytes=90-", 100) == ByteRange(90, 99)
    assert parse_range("bytes=-10", 100) == ByteRange(90, 99)
    assert parse_range("bytes=95-500", 100) == ByteRange(95, 99)
    assert parse_range("bytes=0-1,5-6", 100) is None  # several ranges: whole file (RFC 9110 allows it)
    assert parse_range("bytes=9-2", 100) is None and parse_range("items=0-1", 100) is None
    huge = "9" * 5000  # more digits than int() parses (4,300): still the right answer, never a ValueError
    assert parse_range(f"bytes=0-{huge}", 100) == ByteRange(0, 99)
    assert parse_range(f"bytes=-{huge}", 100) == ByteRange(0, 99)
    assert parse_range(f"bytes=00000000000000000000000000000000005-{huge}", 100) == ByteRange(5, 99)
    assert parse_range(f"bytes={huge}-5", 100) is None  # last before first: ignored like any invalid range
    assert parse_range("bytes=\u0661-\u0662", 100) is None  # non-ASCII digits are not a range
    for bad in ("bytes=100-", "bytes=-0", "bytes=200-300", f"bytes={huge}-", f"bytes={huge}-{huge}", "bytes=0100-"):
        with pytest.raises(Unsatisfiable):
            parse_range(bad, 100)
    assert range_applies(None, '"e"') and range_applies('"e"', '"e"') and not range_applies('"f"', '"e"')
