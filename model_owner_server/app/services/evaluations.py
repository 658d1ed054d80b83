"""Evaluation requests: a built-in task by name, or a multiple-choice JSONL uploaded with the request.
Both are checked before a job is queued (unknown task, bad rows -> 422 naming each bad line)."""

from __future__ import annotations

from pathlib import Path

from fastapi import HTTPException, status
from sqlmodel import Session

from model_owner_server.app.api.deps import Principal
from model_owner_server.app.core.state import AppState
from model_owner_server.app.services.access import visible_adapter
from model_owner_server.db.models import Evaluation, JobKind
from model_owner_server.jobs import queue
from model_owner_server.jobs.evaluation_job import UPLOADED_DATA, evaluation_prefix
from shared.data_formats import DataFormatError, load_mc_jsonl


def unprocessable(message: str, problems: list[str] | None = None) -> HTTPException:
    detail: object = message if problems is None else {"message": message, "problems": problems}
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail)


def check_builtin_task(task: str) -> None:
    from shared.tasks import TASKS

    if task not in TASKS:
        raise unprocessable(f"unknown task {task!r}; built-in tasks: {', '.join(TASKS)} (or upload a "
                            "multiple-choice JSONL as multipart field 'file')")


def check_upload(path: Path, filename: str) -> int:
    try:
        rows = load_mc_jsonl(path)
    except DataFormatError as exc:
        problems = [p.replace(str(path), filename) for p in exc.problems]
        raise unprocessable(f"{filename}: {len(problems)} problem(s) in the multiple-choice JSONL", problems) from exc
    return len(rows)


def create_evaluation(session: Session, state: AppState, principal: Principal, adapter_id: str, task: str,
                      limit: int | None, upload: Path | None = None) -> Evaluation:
    adapter = visible_adapter(session, principal, adapter_id)
    job = queue.enqueue(session, JobKind.evaluation, "pending", state.settings.max_attempts)
    row = Evaluation(id=queue.new_id("eval"), owner_id=principal.owner_id, adapter_id=adapter.id, task=task,
                     source="upload" if upload else "builtin", example_limit=limit, job_id=job.id)
    job.subject_id = row.id
    if upload is not None:
        state.store.put_file(f"{evaluation_prefix(row.id)}/{UPLOADED_DATA}", upload)
    session.add(job)
    session.flush()
    session.add(row)
    session.commit()
    return row
