"""Agreement checks: a data owner uploads unlabelled prompts for an emulator it may see; the worker scores
them on the emulator and the full model and stores only the aggregates (agreement, mean KL, verdict).
The prompt file is checked row by row before anything is stored (422 naming each bad line: a label or
target, a missing context, too many rows, a row too long)."""

from __future__ import annotations

from pathlib import Path

from sqlmodel import Session

from model_owner_server.app.core.security import Principal
from model_owner_server.app.core.state import AppState
from model_owner_server.app.services import quotas
from model_owner_server.app.services.access import built_emulator
from model_owner_server.app.services.errors import Unprocessable
from model_owner_server.app.services.prompt_sets import read_prompt_file
from model_owner_server.db.models import AgreementCheck, JobKind
from model_owner_server.emulators.task_calibration import prompt_set_sha256
from model_owner_server.jobs import queue
from model_owner_server.storage.keys import agreement_prompts
from shared.data_formats import Prompt

MAX_SCORINGS = 20_000  # choices over all prompts: each is scored on both models


def read_prompts(path: Path, filename: str) -> list[Prompt]:
    """Every row checked (422 naming each bad line); at least one prompt with two or more choices."""
    prompts = read_prompt_file(path, filename)
    scorings = sum(len(p.choices) for p in prompts)
    if scorings > MAX_SCORINGS:
        raise Unprocessable(f"{filename}: {scorings} choices in all; an agreement check scores at most {MAX_SCORINGS} "
                            "(send fewer prompts: a few hundred like yours are enough)")
    if not any(len(p.choices) >= 2 for p in prompts):
        raise Unprocessable(f"{filename}: no row has 'choices'; an agreement check compares the answers to "
                            "multiple-choice prompts: give each row at least two choices")
    return prompts


def create_check(session: Session, state: AppState, principal: Principal, emulator_id: str,
                 prompts: list[Prompt], data: Path) -> AgreementCheck:
    emulator = built_emulator(session, principal, emulator_id, "check agreement", state.store)
    size = data.stat().st_size
    quotas.check_new_job(session, state.settings, principal, JobKind.agreement_check)  # 429 before anything
    quotas.check_storage(session, state.settings, principal, size)
    check_job = queue.enqueue(session, JobKind.agreement_check, "pending", state.settings.max_attempts,
                              principal.owner_id)
    row = AgreementCheck(id=queue.new_id("agr"), owner_id=principal.owner_id, emulator_id=emulator.id,
                         n_prompts=len(prompts), prompts_sha256=prompt_set_sha256(prompts), job_id=check_job.id,
                         stored_bytes=size)
    check_job.subject_id = row.id
    state.store.put_file(agreement_prompts(row.id), data)
    session.add(check_job)
    session.flush()
    session.add(row)
    session.commit()
    return row

