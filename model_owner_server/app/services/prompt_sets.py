"""Prompt sets: a data owner's unlabelled prompts (`{"context", "choices"}` rows, never labels or targets),
uploaded once and referenced by a calibrated emulator request. Checked row by row before anything is
stored (422 naming each bad line); visible to their owner alone."""

from __future__ import annotations

from pathlib import Path

from sqlmodel import Session

from model_owner_server.app.core.security import Principal
from model_owner_server.app.core.state import AppState
from model_owner_server.app.services import quotas
from model_owner_server.app.services.errors import Unprocessable
from model_owner_server.db.models import PromptSet
from model_owner_server.emulators.task_calibration import prompt_set_sha256
from model_owner_server.jobs import queue
from model_owner_server.storage.keys import prompt_set_data
from shared.data_formats import DataFormatError, Prompt, load_prompt_jsonl
from shared.scoring import continuation_pair, encode_request

MIN_CALIBRATION_PROMPTS = 8  # fewer cannot both refine the harmonizers and hold some out to check them


def check_fields(fields: dict[str, str], file_parts: int, what: str) -> None:
    problems = [f"unexpected field {name!r}; send only the file part" for name in sorted(fields)]
    if file_parts != 1:
        problems.append(f"exactly one 'file' part (prompt JSONL) is needed, got {file_parts}")
    if problems:
        raise Unprocessable({"message": f"invalid multipart {what}", "problems": problems})


def read_prompt_file(path: Path, filename: str) -> list[Prompt]:
    """Every row checked (422 naming each bad line, the file named as the client sent it)."""
    try:
        return load_prompt_jsonl(path)
    except DataFormatError as exc:
        problems = [p.replace(str(path), filename) for p in exc.problems]
        raise Unprocessable({"message": f"{filename}: {len(problems)} problem(s) in the prompt JSONL",
                             "problems": problems}) from exc


def create_prompt_set(session: Session, state: AppState, principal: Principal, path: Path,
                      filename: str) -> PromptSet:
    prompts = read_prompt_file(path, filename)
    if len(prompts) < MIN_CALIBRATION_PROMPTS:
        raise Unprocessable(f"{filename}: {len(prompts)} prompt(s); calibration needs at least "
                            f"{MIN_CALIBRATION_PROMPTS} (a share is held out to check the result)")
    size = path.stat().st_size
    quotas.check_storage(session, state.settings, principal, size)  # 429 before anything is stored
    row = PromptSet(id=queue.new_id("pset"), owner_id=principal.owner_id, sha256=prompt_set_sha256(prompts),
                    n_prompts=len(prompts), stored_bytes=size)
    state.store.put_file(prompt_set_data(row.id), path)
    session.add(row)
    session.commit()
    return row


def check_context_window(prompts: list[Prompt], tokenizer: object, window: int | None, filename: str) -> None:
    """422 naming every row whose context and longest choice do not fit the base model's context window."""
    if window is None:
        return
    problems = []
    for number, prompt in enumerate(prompts, start=1):
        longest = max(prompt.choices, key=len) if prompt.choices else ""
        context, continuation = encode_request(tokenizer, *continuation_pair(prompt.context, longest))  # type: ignore[arg-type]
        if len(context) + len(continuation) > window:
            problems.append(f"{filename}:{number}: {len(context) + len(continuation)} tokens; the base model's "
                            f"context window is {window}: shorten the context")
        if len(problems) >= 20:
            break
    if problems:
        raise Unprocessable({"message": f"{filename}: prompts longer than the context window", "problems": problems})
