"""The data owner's JSONL formats: round trips, and every format error named with its file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.data_formats import (
    MAX_PROBLEMS,
    DataFormatError,
    MCExample,
    TrainExample,
    load_mc_jsonl,
    load_training_jsonl,
    write_mc_jsonl,
    write_training_jsonl,
)


def _write(tmp_path: Path, *lines: str | bytes) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\n".join(line if isinstance(line, bytes) else line.encode() for line in lines) + b"\n")
    return path


def _problems(load: object, path: Path) -> list[str]:
    with pytest.raises(DataFormatError) as caught:
        load(path)  # type: ignore[operator]
    assert str(path) in str(caught.value)
    return caught.value.problems


def test_training_round_trip_and_text_rows(tmp_path: Path) -> None:
    examples = [TrainExample("Q: 1+1?\nA:", " 2"), TrainExample("", "plain text, ünïcode ✓"), TrainExample("c", "t")]
    path = write_training_jsonl(tmp_path / "sub" / "train.jsonl", examples)
    assert load_training_jsonl(path) == examples
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert rows[1] == {"text": "plain text, ünïcode ✓"}  # context "" is written as a text row
    assert not list(path.parent.glob(".*"))  # no temporary file left behind


def test_mc_round_trip_blank_lines_and_bom(tmp_path: Path) -> None:
    examples = [MCExample("Sky?", ["blue", "green"], 0), MCExample("", ["a", "b", "c"], 2)]
    path = write_mc_jsonl(tmp_path / "mc.jsonl", examples)
    assert load_mc_jsonl(path) == examples
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes() + b"\n\n")
    assert load_mc_jsonl(path) == examples


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"context": "a", "target": "b"', "invalid JSON"),
        ('["context", "target"]', "expected a JSON object, got array"),
        ('{"context": "a"}', "missing field(s) 'target'"),
        ('{"context": "a", "target": "b", "id": 3}', "unexpected field(s) 'id'"),
        ('{"context": 1, "target": "b"}', "field 'context' must be a string, got int"),
        ('{"context": "a", "target": ""}', "field 'target' is empty"),
        ('{"text": ""}', "field 'text' is empty"),
        ('{"text": "a", "target": "b"}', "unexpected field(s) 'target'"),
        ('{"context": "a", "choices": ["x", "y"], "label": 0}', "this is a multiple-choice row"),
    ],
)
def test_training_errors_name_file_line_and_fix(tmp_path: Path, line: str, expected: str) -> None:
    path = _write(tmp_path, '{"text": "fine"}', line)
    problems = _problems(load_training_jsonl, path)
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}:2: ")
    assert expected in problems[0]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("not json", "invalid JSON"),
        ("42", "expected a JSON object, got int"),
        ('{"context": "q", "choices": ["a", "b"]}', "missing field(s) 'label'"),
        ('{"context": "q", "choices": ["a", "b"], "label": 0, "x": 1}', "unexpected field(s) 'x'"),
        ('{"context": "q", "choices": "a,b", "label": 0}', "must be an array of strings, got string"),
        ('{"context": "q", "choices": [], "label": 0}', "'choices' is empty; it needs at least 2"),
        ('{"context": "q", "choices": ["a"], "label": 0}', "has only 1 choice; it needs at least 2"),
        ('{"context": "q", "choices": ["a", 2], "label": 0}', "index(es) [1] must be non-empty strings"),
        ('{"context": "q", "choices": ["a", ""], "label": 0}', "index(es) [1] must be non-empty strings"),
        ('{"context": "q", "choices": ["a", "a"], "label": 0}', "has duplicates"),
        ('{"context": "q", "choices": ["a", "b"], "label": 2}', "label 2 is out of range; it must be between 0 and 1"),
        ('{"context": "q", "choices": ["a", "b"], "label": -1}', "label -1 is out of range"),
        ('{"context": "q", "choices": ["a", "b"], "label": "0"}', "'label' must be an integer"),
        ('{"context": "q", "choices": ["a", "b"], "label": true}', "'label' must be an integer"),
        ('{"context": null, "choices": ["a", "b"], "label": 0}', "'context' must be a string, got null"),
    ],
)
def test_mc_errors_name_file_line_and_fix(tmp_path: Path, line: str, expected: str) -> None:
    path = _write(tmp_path, '{"context": "ok", "choices": ["a", "b"], "label": 1}', line)
    problems = _problems(load_mc_jsonl, path)
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}:2: ")
    assert expected in problems[0]


def test_non_utf8_line_is_reported(tmp_path: Path) -> None:
    path = _write(tmp_path, '{"text": "ok"}', b'{"text": "caf\xe9"}')
    problems = _problems(load_training_jsonl, path)
    assert problems[0].startswith(f"{path}:2: not valid UTF-8")


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_empty_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    for load in (load_training_jsonl, load_mc_jsonl):
        assert "the file has no rows" in _problems(load, path)[0]


def test_all_problems_reported_at_once_up_to_a_cap(tmp_path: Path) -> None:
    good = '{"context": "q", "choices": ["a", "b"], "label": 0}'
    path = _write(tmp_path, good, "oops", good, '{"context": 5, "choices": ["a"], "label": 0}')
    problems = _problems(load_mc_jsonl, path)
    assert [p.split(": ")[0] for p in problems] == [f"{path}:2", f"{path}:4", f"{path}:4"]

    path = _write(tmp_path, *(["broken"] * (MAX_PROBLEMS + 10)))
    with pytest.raises(DataFormatError) as caught:
        load_mc_jsonl(path)
    assert len(caught.value.problems) == MAX_PROBLEMS
    assert f"stopped after {MAX_PROBLEMS} problems" in str(caught.value)


def test_format_error_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="expected one JSON object per line"):
        load_training_jsonl(_write(tmp_path, "{"))
