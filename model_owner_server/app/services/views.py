"""Database rows -> response schemas."""

from __future__ import annotations

import json
from functools import lru_cache

from sqlmodel import Session

from model_owner_server.db.models import Adapter, AgreementCheck, Emulator, Evaluation, Job, JobState, PromptSet
from model_owner_server.emulators.stored import DAMAGED_MESSAGE, damaged_error, stored_problems, try_mark_damaged
from model_owner_server.evaluation.matrix import EvaluationMatrix
from model_owner_server.storage.base import ArtifactStore
from model_owner_server.storage.keys import emulator_file
from shared.api import (
    AdapterOut,
    AgreementOut,
    AgreementResult,
    EmulatorFile,
    EmulatorOut,
    EvaluationOut,
    JobStatus,
    PromptSetOut,
)
from shared.manifest import MANIFEST_NAME, EmulatorManifest, FileEntry


@lru_cache(maxsize=512)
def parse_manifest(text: str) -> EmulatorManifest:
    """Manifests never change once written: parse each one once (status polling is the hot path)."""
    return EmulatorManifest.model_validate_json(text)


def job_status(session: Session, job_id: str | None, job: Job | None = None) -> JobStatus:
    """The job's status; pass `job` when the caller has the row already (no query then)."""
    if job is None or job.id != job_id:
        job = session.get(Job, job_id) if job_id else None
    if job is None:
        return JobStatus(job_id=job_id, state=JobState.queued)
    return JobStatus(job_id=job.id, state=job.state, progress=job.progress, message=job.message, error=job.error,
                     attempts=job.attempts, created_at=job.created_at, started_at=job.started_at,
                     finished_at=job.finished_at)


def _checked_status(session: Session, store: ArtifactStore, row: Emulator, status: JobStatus,
                    manifest: EmulatorManifest) -> JobStatus:
    """A succeeded build whose stored files are gone or damaged is not reported as usable: it is marked
    failed with the reason (so requesting it again rebuilds it, `emulators/stored.py`)."""
    problems = stored_problems(store, row.id, manifest)
    if not problems:
        return status
    if status.job_id is not None:
        try_mark_damaged(session.get_bind(), row.id, status.job_id, problems)
    return status.model_copy(update={"state": JobState.failed, "message": DAMAGED_MESSAGE,
                                     "error": damaged_error(row.id, problems)})


def emulator_out(session: Session, store: ArtifactStore, row: Emulator, job: Job | None = None) -> EmulatorOut:
    status = job_status(session, row.job_id, job)
    manifest = parse_manifest(row.manifest_json) if row.manifest_json else None
    if manifest is not None and status.state == JobState.succeeded:
        status = _checked_status(session, store, row, status, manifest)
    files: list[EmulatorFile] = []
    if manifest is not None and status.state == JobState.succeeded:
        base = f"/v1/emulators/{row.id}/files"
        files = [EmulatorFile(name=n, size=f.size, sha256=f.sha256, url=f"{base}/{n}")
                 for n, f in sorted(manifest.files.items())]
        info = store.stat(emulator_file(row.id, MANIFEST_NAME))
        files.insert(0, EmulatorFile(name=MANIFEST_NAME, size=info.size if info else 0, sha256=None,
                                     url=f"{base}/{MANIFEST_NAME}"))
    return EmulatorOut(id=row.id, base_model=row.base_model, method=row.method, spec=json.loads(row.spec_json),
                       state=status.state, progress=status.progress, error=status.error, status=status,
                       manifest=manifest, files=files, created_at=row.created_at)


def adapter_out(row: Adapter) -> AdapterOut:
    files = {k: FileEntry.model_validate(v) for k, v in json.loads(row.files_json).items()}
    return AdapterOut(id=row.id, emulator_id=row.emulator_id, kind=row.kind, files=files, size=row.size,
                      created_at=row.created_at)


def evaluation_out(session: Session, row: Evaluation, job: Job | None = None) -> EvaluationOut:
    """Pass `job` when the caller has the row's job already (no query then)."""
    result = EvaluationMatrix.model_validate_json(row.result_json) if row.result_json else None
    status = job_status(session, row.job_id, job)
    return EvaluationOut(id=row.id, adapter_id=row.adapter_id, task=row.task, source=row.source,
                         limit=row.example_limit, state=status.state, progress=status.progress, error=status.error,
                         status=status, result=result, created_at=row.created_at)


def agreement_out(session: Session, row: AgreementCheck) -> AgreementOut:
    result = AgreementResult.model_validate_json(row.result_json) if row.result_json else None
    status = job_status(session, row.job_id)
    return AgreementOut(id=row.id, emulator_id=row.emulator_id, n_prompts=row.n_prompts, state=status.state,
                        progress=status.progress, error=status.error, status=status, result=result,
                        created_at=row.created_at)


def prompt_set_out(row: PromptSet) -> PromptSetOut:
    return PromptSetOut(id=row.id, n_prompts=row.n_prompts, sha256=row.sha256, created_at=row.created_at)
