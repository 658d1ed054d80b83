"""Issue 27 items 1 and 9: an uploaded JSONL is checked while it arrives, holding one row at most. A
10 MiB row, a million rows past the cap or past `limit` cost no memory, and a lone surrogate is a
problem naming its line."""

from __future__ import annotations

import io
import json
import tracemalloc
from pathlib import Path

import pytest

from shared.data_formats import (
    MAX_PROBLEMS,
    DataFormatError,
    RowCapError,
    StreamedJsonl,
    load_mc_jsonl,
    parse_mc_upload,
)

GOOD = json.dumps({"context": "q", "choices": ["a", "b"], "label": 0}).encode() + b"\n"
CHUNK = 64 * 1024


def feed(checker: StreamedJsonl[object], data: bytes, chunk: int = CHUNK) -> int:
    for start in range(0, len(data), chunk):
        checker.write(data[start : start + chunk])
    return checker.finish()


def checker(out: io.BytesIO, max_rows: int = 1000, max_row_bytes: int = 1024,
            keep: int | None = None) -> StreamedJsonl[object]:
    return StreamedJsonl("mine.jsonl", parse_mc_upload, out, max_rows, max_row_bytes, keep)


def test_good_rows_are_stored_as_sent() -> None:
    out = io.BytesIO()
    assert feed(checker(out), b"\xef\xbb\xbf" + GOOD + b"\n  \n" + GOOD.rstrip(), chunk=7) == 2
    assert out.getvalue() == GOOD * 2  # byte-order mark and blank lines dropped, the rest byte for byte


def test_a_huge_row_is_skipped_without_being_buffered() -> None:
    huge = b'{"context": "' + b"x" * (10 * 1024 * 1024) + b'", "choices": ["a", "b"], "label": 0}\n'
    data = GOOD + huge + GOOD  # made before tracing: only what the checker allocates counts
    tracemalloc.start()
    try:
        with pytest.raises(DataFormatError) as caught:
            feed(checker(io.BytesIO()), data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024, peak  # about one chunk, not the 10 MiB row
    assert caught.value.problems == [f"mine.jsonl:2: the row is {len(huge) - 1:,} bytes; at most 1,024 bytes per "
                                     "row: shorten it"]


def test_row_cap_stops_at_the_first_row_past_it_and_limit_ignores_the_rest() -> None:
    with pytest.raises(RowCapError, match=r"more than 1,000 rows \(line 1001\).*limit"):
        feed(checker(io.BytesIO()), GOOD * 100_000)
    out = io.BytesIO()
    kept = checker(out, keep=3)
    assert feed(kept, GOOD * 3 + b"not json\n" * 100_000) == 3  # rows past the limit are not even parsed
    assert out.getvalue() == GOOD * 3


def test_problems_are_collected_up_to_the_cap() -> None:
    with pytest.raises(DataFormatError) as caught:
        feed(checker(io.BytesIO()), GOOD + b"oops\n" * 100)
    assert len(caught.value.problems) == MAX_PROBLEMS and caught.value.problems[0].startswith("mine.jsonl:2: ")
    with pytest.raises(DataFormatError, match="at most 64 per row"):
        feed(checker(io.BytesIO()), json.dumps({"context": "q", "choices": [str(i) for i in range(65)],
                                                "label": 0}).encode())


@pytest.mark.parametrize("row, field", [
    ({"context": "a\ud800b", "choices": ["x", "y"], "label": 0}, "field 'context'"),
    ({"context": "a", "choices": ["x", "\udfff"], "label": 0}, "field 'choices'[1]"),
])
def test_a_lone_surrogate_is_a_problem_naming_line_and_field(row: dict[str, object], field: str,
                                                             tmp_path: Path) -> None:
    line = json.dumps(row).encode()  # ensure_ascii spells the lone surrogate as a \\ud800 escape
    with pytest.raises(DataFormatError) as caught:
        feed(checker(io.BytesIO()), GOOD + line + b"\n")
    [problem] = caught.value.problems
    assert problem.startswith(f"mine.jsonl:2: {field} holds a lone surrogate (\\ud"), problem
    path = tmp_path / "mine.jsonl"  # the file loaders (the data owner's own check) say the same
    path.write_bytes(GOOD + line + b"\n")
    with pytest.raises(DataFormatError, match="lone surrogate"):
        load_mc_jsonl(path)
    pair = json.dumps({"context": "a\U0001f600", "choices": ["x", "y"], "label": 0}).encode()  # \\ud83d\\ude00
    assert feed(checker(io.BytesIO()), pair) == 1  # a valid pair is accepted
