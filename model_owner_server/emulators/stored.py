"""An emulator's stored files, checked where they are used; a missing or damaged emulator is marked so
that the next request for it rebuilds it.

A build that succeeded says nothing about the files later: a folder deleted or truncated by hand, a
disk error, a bucket lifecycle rule. So the places that use a built emulator check its files first
(cheaply: present, with the size the manifest records; the worker, which loads them, also checks their
sha256): the status, a download, an adapter upload, an evaluation or agreement check. A damaged one has
its build job turned from `succeeded` to `failed` with the reason, so its status stops saying it is
usable, and requesting it again queues a new build (a failed build is rebuilt on request, see
`app/services/emulators.py`). The reasons name files, never server paths.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import col
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from model_owner_server.db.models import Emulator, Job, JobState
from model_owner_server.storage.base import ArtifactStore
from model_owner_server.storage.keys import emulator_file, emulator_prefix
from shared.artifacts import ArtifactError, load_emulator
from shared.manifest import MANIFEST_NAME, EmulatorManifest

log = logging.getLogger("scaleot.emulators")

DAMAGED_MESSAGE = "stored files missing or damaged"


def stored_problems(store: ArtifactStore, emulator_id: str, manifest: EmulatorManifest) -> list[str]:
    """What is wrong with the stored files of a built emulator (empty: all present at their sizes)."""
    problems = [] if store.stat(emulator_file(emulator_id, MANIFEST_NAME)) else [f"{MANIFEST_NAME}: missing"]
    for name, entry in sorted(manifest.files.items()):
        info = store.stat(emulator_file(emulator_id, name))
        if info is None:
            problems.append(f"{name}: missing")
        elif info.size != entry.size:
            problems.append(f"{name}: {info.size} bytes, the manifest records {entry.size}")
    return problems


def damaged_error(emulator_id: str, problems: list[str]) -> str:
    listed = "; ".join(problems)
    if len(listed) > 600:
        listed = listed[:600] + " ..."
    return (f"the stored files of emulator {emulator_id} are missing or damaged ({listed}); request it again "
            "(POST /v1/emulators with the same parameters) to rebuild it")


def mark_damaged(bind: Engine | Connection, emulator_id: str, job_id: str, problems: list[str]) -> bool:
    """Turn the emulator's succeeded build into a failed one with the reason (a conditional UPDATE: only a
    build still marked succeeded). With an Engine, in its own transaction; with a Connection, in the
    caller's. True when this call marked it."""
    statement = update(Job).where(col(Job.id) == job_id, col(Job.state) == JobState.succeeded).values(
        state=JobState.failed, message=DAMAGED_MESSAGE, error=damaged_error(emulator_id, problems)[:4000],
        updated_at=time.time())
    if isinstance(bind, Connection):
        marked = bool(bind.execute(statement).rowcount)
    else:
        with bind.begin() as connection:
            marked = bool(connection.execute(statement).rowcount)
    if marked:
        log.warning("emulator %s: %s; marked for rebuild", emulator_id, "; ".join(problems))
    return marked


def try_mark_damaged(bind: Engine | Connection, emulator_id: str, job_id: str, problems: list[str]) -> None:
    """`mark_damaged` where the caller answers from what it found whether or not the mark is written (a
    status read while the database is locked still says the emulator is unusable)."""
    try:
        mark_damaged(bind, emulator_id, job_id, problems)
    except SQLAlchemyError as exc:
        log.warning("emulator %s is damaged but could not be marked now (%s); the next use marks it",
                    emulator_id, type(exc).__name__)


class EmulatorDamaged(RuntimeError):
    """A job needs an emulator whose stored files are missing or damaged (it is marked for rebuild)."""


def load_stored_emulator(store: ArtifactStore, bind: Engine, row: Emulator, then: str
                         ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, EmulatorManifest]:
    """Load a built emulator for a job, every file's sha256 checked; a missing or damaged one is marked for
    rebuild and the job fails saying so (what to do, no server paths)."""
    try:
        return load_emulator(store.local_dir(emulator_prefix(row.id)))
    except ArtifactError as exc:
        log.warning("emulator %s failed its check: %s", row.id, exc)  # the paths stay in the log
        manifest = EmulatorManifest.model_validate_json(row.manifest_json) if row.manifest_json else None
        problems = (stored_problems(store, row.id, manifest) if manifest else []) or [
            "a file's sha256 does not match the manifest (modified or corrupted)"]
        if row.job_id is not None:
            try_mark_damaged(bind, row.id, row.job_id, problems)
        raise EmulatorDamaged(f"{damaged_error(row.id, problems)}; then {then}") from None
