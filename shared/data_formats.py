"""The data owner's JSONL formats (design.md): training rows and multiple-choice rows.

Training: `{"context": str, "target": str}` (loss on the target only) or `{"text": str}` (loss on
everything). Multiple choice: `{"context": str, "choices": [str, ...], "label": int}`.
Loading streams the file line by line and collects up to MAX_PROBLEMS problems, each with its
`file:line`, so a user fixes a bad file in one pass instead of one error at a time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

from shared.atomic import atomic_file
from shared.bounded_json import JSONLimitError, loads_bounded

MAX_PROBLEMS = 20

TRAIN_FORMAT = '{"context": str, "target": str} or {"text": str}'
MC_FORMAT = '{"context": str, "choices": [str, str, ...], "label": int}'
PROMPT_FORMAT = '{"context": str, "choices": [str, str, ...]} (no label or target)'
MAX_PROMPTS = 2_000  # rows of one prompt set (an agreement check or a calibration)
MAX_PROMPT_CHARS = 20_000  # characters of one prompt's context and choices together
MAX_PROMPT_CHOICES = 64  # choices of one prompt (each is one scored continuation)
MAX_MC_ROW_BYTES = 64 * 1024  # bytes of one uploaded multiple-choice row (a long passage is ~10 KiB)
MAX_MC_CHOICES = 64  # choices of one uploaded multiple-choice row (each is one scored continuation)
BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Prompt:
    """One unlabelled prompt (`{"context": str, "choices": [str, ...]}`, choices optional): what a data owner
    may show the model owner for an agreement check or a calibrated emulator. It never holds a label or a
    target: the model owner learns the prompts, not the answers."""

    context: str
    choices: tuple[str, ...] = ()


def unlabelled(examples: Iterable[MCExample]) -> list[Prompt]:
    """Multiple-choice rows as prompts: the context and choices, the label dropped."""
    return [Prompt(e.context, tuple(e.choices)) for e in examples]


@dataclass(frozen=True)
class TrainExample:
    """One training row; a `{"text"}` row has context "" (loss on the whole text)."""

    context: str
    target: str


@dataclass(frozen=True)
class MCExample:
    """One multiple-choice row; `label` indexes `choices`."""

    context: str
    choices: list[str]
    label: int


class DataFormatError(ValueError):
    """A data file that does not follow its format; `problems` lists every `file:line: what` found."""

    def __init__(self, path: Path, problems: list[str], truncated: bool = False) -> None:
        self.path = path
        self.problems = problems
        more = f"\n(stopped after {MAX_PROBLEMS} problems)" if truncated else ""
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"{path}: {len(problems)} {noun}:\n" + "\n".join(problems) + more)


T = TypeVar("T")


def _type_name(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _check_keys(row: dict[str, Any], allowed: set[str], expected: str) -> list[str]:
    problems = []
    missing = sorted(allowed - row.keys())
    extra = sorted(row.keys() - allowed)
    if missing:
        problems.append(f"missing field(s) {', '.join(map(repr, missing))}; expected {expected}")
    if extra:
        problems.append(f"unexpected field(s) {', '.join(map(repr, extra))}; expected {expected}")
    return problems


def _check_str(row: dict[str, Any], key: str, allow_empty: bool) -> list[str]:
    if key not in row:
        return []
    value = row[key]
    if not isinstance(value, str):
        return [f"field {key!r} must be a string, got {_type_name(value)}"]
    if not allow_empty and not value:
        return [f"field {key!r} is empty; it must be a non-empty string"]
    return []


def _parse_train(row: dict[str, Any]) -> tuple[TrainExample | None, list[str]]:
    if "choices" in row or "label" in row:
        return None, [
            f"this is a multiple-choice row; a training file needs {TRAIN_FORMAT} "
            "(convert multiple-choice data with shared.tasks.as_training_examples)"
        ]
    if "text" in row:
        problems = _check_keys(row, {"text"}, TRAIN_FORMAT) + _check_str(row, "text", allow_empty=False)
        return (None, problems) if problems else (TrainExample(context="", target=row["text"]), [])
    problems = _check_keys(row, {"context", "target"}, TRAIN_FORMAT)
    problems += _check_str(row, "context", allow_empty=True) + _check_str(row, "target", allow_empty=False)
    return (None, problems) if problems else (TrainExample(context=row["context"], target=row["target"]), [])


def _parse_mc(row: dict[str, Any]) -> tuple[MCExample | None, list[str]]:
    problems = _check_keys(row, {"context", "choices", "label"}, MC_FORMAT) + _check_str(row, "context", True)
    choices = row.get("choices")
    if "choices" in row:
        if not isinstance(choices, list):
            problems.append(f"field 'choices' must be an array of strings, got {_type_name(choices)}")
            choices = None
        elif len(choices) < 2:
            what = "is empty" if not choices else "has only 1 choice"
            problems.append(f"field 'choices' {what}; it needs at least 2 choices")
        else:
            bad = [i for i, c in enumerate(choices) if not isinstance(c, str) or not c]
            if bad:
                problems.append(f"choices at index(es) {bad} must be non-empty strings")
            elif len(set(choices)) != len(choices):
                problems.append("field 'choices' has duplicates; every choice must be distinct")
    label = row.get("label")
    if "label" in row:
        if not isinstance(label, int) or isinstance(label, bool):
            problems.append(f"field 'label' must be an integer index into 'choices', got {_type_name(label)}")
        elif isinstance(choices, list) and len(choices) >= 2 and not 0 <= label < len(choices):
            problems.append(f"label {label} is out of range; it must be between 0 and {len(choices) - 1}")
    if problems:
        return None, problems
    return MCExample(context=row["context"], choices=list(row["choices"]), label=row["label"]), []


def _parse_prompt(row: dict[str, Any]) -> tuple[Prompt | None, list[str]]:
    """An unlabelled prompt: a row that carries an answer ('label', 'target') is refused, not stripped, so a
    data owner never sends one by mistake."""
    leaked = [k for k in ("label", "target", "answer") if k in row]
    if leaked:
        return None, [f"field(s) {', '.join(repr(k) for k in leaked)} not allowed: a prompt set holds no answers "
                      f"(remove them); expected {PROMPT_FORMAT}"]
    problems = _check_keys(row, {"context", *({"choices"} & row.keys())}, PROMPT_FORMAT)
    if problems:
        return None, problems
    example, problems = _parse_mc({**row, "label": 0}) if "choices" in row else (None, _check_str(row, "context", True))
    if problems:
        return None, problems
    choices = tuple(example.choices) if example is not None else ()
    if len(choices) > MAX_PROMPT_CHOICES:
        return None, [f"{len(choices)} choices; at most {MAX_PROMPT_CHOICES} per prompt"]
    context = str(row["context"])
    if not context and not choices:
        return None, ["field 'context' is empty and there are no choices: nothing to compare"]
    size = len(context) + sum(len(c) for c in choices)
    if size > MAX_PROMPT_CHARS:
        return None, [f"the prompt is {size} characters long (context and choices); at most {MAX_PROMPT_CHARS}"]
    return Prompt(context=context, choices=choices), []


def _surrogate_problem(row: dict[str, Any]) -> str | None:
    """JSON may spell a lone UTF-16 surrogate (`"\\ud800"`); Python then holds a str that no encoder or
    tokenizer accepts, so the row would only fail later, deep in a job. Name the field instead."""
    texts: list[tuple[str, str]] = []
    for key, value in row.items():
        texts.append(("a field name", key))
        if isinstance(value, str):
            texts.append((f"field {key!r}", value))
        elif isinstance(value, list):
            texts.extend((f"field {key!r}[{i}]", v) for i, v in enumerate(value) if isinstance(v, str))
    for name, text in texts:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            return (f"{name} holds a lone surrogate (\\u{ord(text[exc.start]):04x} at character {exc.start}); "
                    "a \\uD800-\\uDFFF escape must be one half of a valid pair: fix or remove it")
    return None


def _parse_line(raw: bytes, number: int, where: str,
                parse: Callable[[dict[str, Any]], tuple[T | None, list[str]]]) -> tuple[T | None, list[str]]:
    """One JSONL line -> (the row, or None for a blank line or a bad one; its problems, each `where: what`)."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, [f"{where}: not valid UTF-8 (byte {exc.start}); save the file as UTF-8"]
    if number == 1:
        line = line.removeprefix("\ufeff")  # tolerate a UTF-8 byte-order mark
    if not line.strip():
        return None, []  # blank lines (e.g. a trailing newline) carry no row
    try:
        row = loads_bounded(line)
    except json.JSONDecodeError as exc:
        return None, [f"{where}: invalid JSON ({exc.msg} at column {exc.colno}); expected one JSON object per line"]
    except JSONLimitError as exc:
        return None, [f"{where}: refused: {exc}"]
    if not isinstance(row, dict):
        return None, [f"{where}: expected a JSON object, got {_type_name(row)}"]
    surrogate = _surrogate_problem(row)
    if surrogate is not None:
        return None, [f"{where}: {surrogate}"]
    example, found = parse(row)
    return example, [f"{where}: {p}" for p in found]


def _iter_rows(path: Path, parse: Callable[[dict[str, Any]], tuple[T | None, list[str]]]) -> Iterator[T]:
    """Parse rows lazily; raise one DataFormatError with every problem (up to MAX_PROBLEMS) at the end."""
    problems: list[str] = []
    count = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if len(problems) >= MAX_PROBLEMS:
                raise DataFormatError(path, problems[:MAX_PROBLEMS], truncated=True)
            example, found = _parse_line(raw, number, f"{path}:{number}", parse)
            problems.extend(found)
            if example is not None:
                count += 1
                if not problems:
                    yield example
    if not problems and count == 0:
        problems.append(f"{path}: the file has no rows; expected one JSON object per line")
    if problems:
        raise DataFormatError(path, problems)


class RowCapError(ValueError):
    """More rows than a streamed file may have: the caller answers 413 (too large), not a format problem."""


def parse_mc_upload(row: dict[str, Any]) -> tuple[MCExample | None, list[str]]:
    """A multiple-choice row as an evaluation upload accepts it: the format, and at most MAX_MC_CHOICES choices
    (each choice is one scoring of the whole row, so the count bounds the job's work)."""
    choices = row.get("choices")
    if isinstance(choices, list) and len(choices) > MAX_MC_CHOICES:
        return None, [f"{len(choices)} choices; at most {MAX_MC_CHOICES} per row"]
    return _parse_mc(row)


class StreamedJsonl(Generic[T]):
    """Check a JSONL file while it arrives, chunk by chunk, holding at most one row in memory.

    Every row is parsed and checked as the loaders do (same messages, `name:line`), and the bytes of
    good rows go to `out`, so what is stored is exactly what was checked. Memory stays bounded whatever
    arrives: a row longer than `max_row_bytes` is skipped to its newline (counted, never buffered); a row
    past `max_rows` raises RowCapError at once; once `keep` rows are kept the rest is ignored unparsed
    (an evaluation's `limit`); MAX_PROBLEMS problems stop it with DataFormatError.
    """

    def __init__(self, name: str, parse: Callable[[dict[str, Any]], tuple[T | None, list[str]]], out: IO[bytes],
                 max_rows: int, max_row_bytes: int, keep: int | None = None) -> None:
        self.name, self.parse, self.out = name, parse, out
        self.max_rows, self.max_row_bytes, self.keep = max_rows, max_row_bytes, keep
        self.rows = 0  # good rows so far (written to `out` while the file has no problem)
        self.problems: list[str] = []
        self._line = 0
        self._buffer = bytearray()
        self._skipped: int | None = None  # bytes of a too-long current line, which is not buffered

    @property
    def full(self) -> bool:
        return self.keep is not None and self.rows >= self.keep

    def write(self, chunk: bytes) -> None:
        start = 0
        while start < len(chunk) and not self.full:
            newline = chunk.find(b"\n", start)
            end = len(chunk) if newline < 0 else newline
            if self._skipped is not None:
                self._skipped += end - start
            elif len(self._buffer) + end - start > self.max_row_bytes:
                self._skipped = len(self._buffer) + end - start
                self._buffer.clear()
            else:
                self._buffer += chunk[start:end]
            if newline < 0:
                return
            self._end_line()
            start = newline + 1

    def finish(self) -> int:
        """Check the last line; raise DataFormatError for any problem; returns the rows kept."""
        if not self.full and (self._buffer or self._skipped is not None):
            self._end_line()
        if not self.problems and self.rows == 0:
            self.problems.append(f"{self.name}: the file has no rows; expected one JSON object per line")
        if self.problems:
            raise DataFormatError(Path(self.name), self.problems)
        return self.rows

    def _end_line(self) -> None:
        self._line += 1
        where = f"{self.name}:{self._line}"
        if self._skipped is not None:
            self._problem(f"{where}: the row is {self._skipped:,} bytes; at most {self.max_row_bytes:,} bytes "
                          "per row: shorten it")
            self._skipped = None
            return
        raw = bytes(self._buffer)
        self._buffer.clear()
        example, found = _parse_line(raw, self._line, where, self.parse)
        for problem in found:
            self._problem(problem)
        if example is None:
            return
        if self.rows >= self.max_rows:
            raise RowCapError(f"{self.name}: more than {self.max_rows:,} rows (line {self._line}); send at most "
                              f"{self.max_rows:,}, or a `limit` field (before the file) to use the first rows")
        self.rows += 1
        if not self.problems:  # once the file is refused, storing more of it is pointless
            self.out.write(raw.removeprefix(BOM) if self._line == 1 else raw)
            self.out.write(b"\n")

    def _problem(self, problem: str) -> None:
        self.problems.append(problem)
        if len(self.problems) > MAX_PROBLEMS:
            raise DataFormatError(Path(self.name), self.problems[:MAX_PROBLEMS], truncated=True)


def load_prompt_jsonl(path: str | Path, max_rows: int = MAX_PROMPTS) -> list[Prompt]:
    """Unlabelled prompt rows of a JSONL file (at most `max_rows`); raises DataFormatError listing every problem."""
    prompts: list[Prompt] = []
    for prompt in _iter_rows(Path(path), _parse_prompt):
        prompts.append(prompt)
        if len(prompts) > max_rows:
            raise DataFormatError(Path(path), [f"{path}: more than {max_rows} prompts; send at most {max_rows}"])
    return prompts


def load_training_jsonl(path: str | Path) -> list[TrainExample]:
    """Training rows of a JSONL file; raises DataFormatError listing every problem."""
    return list(_iter_rows(Path(path), _parse_train))


def load_mc_jsonl(path: str | Path) -> list[MCExample]:
    """Multiple-choice rows of a JSONL file; raises DataFormatError listing every problem."""
    return list(_iter_rows(Path(path), _parse_mc))


def _train_row(example: TrainExample) -> dict[str, Any]:
    if not example.context:  # lossless: {"text"} loads back as context ""
        return {"text": example.target}
    return {"context": example.context, "target": example.target}


def _mc_row(example: MCExample) -> dict[str, Any]:
    return {"context": example.context, "choices": list(example.choices), "label": example.label}


def _write_rows(path: Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Write to a temporary file beside `path`, then rename: readers never see a half-written file."""
    with atomic_file(path) as tmp, tmp.open("w", encoding="utf-8") as handle:  # an ordinary 0644 file
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def write_training_jsonl(path: str | Path, examples: Iterable[TrainExample]) -> Path:
    return _write_rows(Path(path), (_train_row(e) for e in examples))


def write_mc_jsonl(path: str | Path, examples: Iterable[MCExample]) -> Path:
    return _write_rows(Path(path), (_mc_row(e) for e in examples))
