"""Evaluation requests: a built-in task by name, or a multiple-choice JSONL uploaded with the request.
Both are checked before a job is queued (unknown task, bad rows -> 422 naming each bad line).

An uploaded JSONL is checked row by row while it arrives (`EvaluationUpload`), so the API holds one
row at a time, never the file: at most MAX_EVAL_LIMIT rows (RowCapError, 413), MAX_MC_ROW_BYTES bytes
and MAX_MC_CHOICES choices per row (422 naming the line), and only the first `limit` rows are read."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from sqlmodel import Session

from model_owner_server.app.core.security import Principal
from model_owner_server.app.core.state import AppState
from model_owner_server.app.services import quotas
from model_owner_server.app.services.access import visible_adapter
from model_owner_server.app.services.errors import Conflict, Unprocessable
from model_owner_server.app.services.uploads import UploadedFile
from model_owner_server.db.models import AgreementCheck, Evaluation, JobKind
from model_owner_server.jobs import queue
from model_owner_server.storage.keys import evaluation_data
from shared.api import MAX_EVAL_LIMIT
from shared.data_formats import MAX_MC_ROW_BYTES, DataFormatError, MCExample, StreamedJsonl, parse_mc_upload

MAX_ID_CHARS = 64
MAX_TASK_CHARS = 200  # the evaluation.task column
_LIMIT = re.compile(r"[0-9]{1,7}")  # ASCII digits only: str.isdigit() also accepts "²"


def unprocessable(message: str, problems: list[str] | None = None) -> Unprocessable:
    return Unprocessable(message if problems is None else {"message": message, "problems": problems})


def check_builtin_task(task: str) -> None:
    from shared.tasks import TASKS

    if task not in TASKS:
        raise unprocessable(f"unknown task {task!r}; built-in tasks: {', '.join(TASKS)} (or upload a "
                            "multiple-choice JSONL as multipart field 'file')")


@dataclass(frozen=True)
class UploadFields:
    adapter_id: str
    task: str
    limit: int | None


def upload_fields(fields: dict[str, str], file_parts: int) -> UploadFields:
    """The text fields of a multipart evaluation, checked against the documented bounds (422)."""
    adapter_id = fields.get("adapter_id", "").strip()
    task = fields.get("task", "").strip() or "custom"
    limit_text = fields.get("limit", "").strip()
    problems = []
    if not adapter_id or len(adapter_id) > MAX_ID_CHARS:
        problems.append(f"field adapter_id is required (at most {MAX_ID_CHARS} characters)")
    if file_parts != 1:
        problems.append(f"exactly one 'file' part (multiple-choice JSONL) is needed, got {file_parts}")
    if len(task) > MAX_TASK_CHARS:
        problems.append(f"field task is {len(task)} characters long (at most {MAX_TASK_CHARS})")
    limit = None
    if limit_text:
        if _LIMIT.fullmatch(limit_text) and 1 <= int(limit_text) <= MAX_EVAL_LIMIT:
            limit = int(limit_text)
        else:
            problems.append(f"field limit must be an integer from 1 to {MAX_EVAL_LIMIT}, got {limit_text[:40]!r}")
    if problems:
        raise unprocessable("invalid multipart evaluation request", problems)
    return UploadFields(adapter_id, task, limit)


def format_problems(filename: str, exc: DataFormatError) -> Unprocessable:
    """422 listing every bad line (each already named `filename:line`)."""
    return unprocessable(f"{filename}: {len(exc.problems)} problem(s) in the multiple-choice JSONL", exc.problems)


def _limit_of(fields: Mapping[str, str]) -> int | None:
    text = fields.get("limit", "").strip()
    return int(text) if _LIMIT.fullmatch(text) and 1 <= int(text) <= MAX_EVAL_LIMIT else None


@dataclass
class EvaluationUpload:
    """The multipart sink of an evaluation upload: each `file` part is checked as it arrives and only its
    good rows are written, the first `limit` of them when the `limit` field came before the file (what a
    client sends first); a later `limit` is applied by `data_file`, still one row at a time."""

    checkers: dict[Path, StreamedJsonl[MCExample]] = field(default_factory=dict)

    def sink_for(self, part: UploadedFile, out: IO[bytes],
                 fields: Mapping[str, str]) -> StreamedJsonl[MCExample] | None:
        if part.field != "file":
            return None
        checker = StreamedJsonl(part.filename or "upload.jsonl", parse_mc_upload, out, max_rows=MAX_EVAL_LIMIT,
                                max_row_bytes=MAX_MC_ROW_BYTES, keep=_limit_of(fields))
        self.checkers[part.path] = checker
        return checker

    def data_file(self, part: UploadedFile, limit: int | None, out: Path) -> Path:
        """The checked rows to evaluate: the part's file, or its first `limit` rows."""
        if limit is None or self.checkers[part.path].rows <= limit:
            return part.path
        with part.path.open("rb") as source, out.open("wb") as target:
            for _ in range(limit):  # one good row per line, each at most MAX_MC_ROW_BYTES
                target.write(source.readline())
        return out


def create_evaluation(session: Session, state: AppState, principal: Principal, adapter_id: str, task: str,
                      limit: int | None, upload: Path | None = None) -> Evaluation:
    adapter = visible_adapter(session, principal, adapter_id)
    size = upload.stat().st_size if upload is not None else 0
    quotas.check_new_job(session, state.settings, principal, JobKind.evaluation)  # 429 before anything is stored
    quotas.check_storage(session, state.settings, principal, size)
    job = queue.enqueue(session, JobKind.evaluation, "pending", state.settings.max_attempts, principal.owner_id)
    row = Evaluation(id=queue.new_id("eval"), owner_id=principal.owner_id, adapter_id=adapter.id, task=task,
                     source="upload" if upload else "builtin", example_limit=limit, job_id=job.id,
                     stored_bytes=size)
    job.subject_id = row.id
    if upload is not None:
        state.store.put_file(evaluation_data(row.id), upload)
    session.add(job)
    session.flush()
    session.add(row)
    session.commit()
    return row


def cancel_job(state: AppState, row: Evaluation | AgreementCheck) -> None:
    """Ask the worker to stop the job of an evaluation (or an agreement check, a job of the same kind of
    life: queued, scored, stored); Conflict once it has finished."""
    if row.job_id is None:
        raise Conflict("nothing to cancel")
    try:
        queue.request_cancel(state.engine, row.job_id)
    except ValueError as exc:
        raise Conflict(str(exc)) from exc
