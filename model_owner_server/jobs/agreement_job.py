"""Job: an agreement check. The data owner's prompts are scored on the emulator and on the full model;
only the aggregates and the verdict are stored. Cancellable at every scoring batch."""

from __future__ import annotations

from sqlmodel import Session

from model_owner_server.db.models import AgreementCheck, Emulator
from model_owner_server.emulators.stored import load_stored_emulator
from model_owner_server.evaluation.agreement import TRANSFER_THRESHOLD, measure_agreement, verdict
from model_owner_server.jobs.worker import JobContext, WorkerServices
from model_owner_server.storage.keys import PROMPTS_FILE, agreement_prefix
from shared.api import AgreementResult
from shared.data_formats import load_prompt_jsonl


def _read_rows(services: WorkerServices, check_id: str) -> tuple[AgreementCheck | None, Emulator | None]:
    with Session(services.engine, expire_on_commit=False) as session:
        row = session.get(AgreementCheck, check_id)
        return row, session.get(Emulator, row.emulator_id) if row else None


def run_agreement_check(ctx: JobContext, services: WorkerServices) -> str:
    row, emulator_row = ctx.db(lambda: _read_rows(services, ctx.job.subject_id), "reading the agreement check")
    if row is None or emulator_row is None:
        raise LookupError(f"agreement check {ctx.job.subject_id} or its emulator no longer exists")
    ctx.progress(0.0, "loading the prompts and the emulator", force=True)
    prompts = load_prompt_jsonl(services.store.local_dir(agreement_prefix(row.id)) / PROMPTS_FILE)
    model, tokenizer, manifest = load_stored_emulator(services.store, services.engine, emulator_row,
                                                      "run the agreement check again")
    base = services.base_models.get(manifest.base_model)
    report = measure_agreement(base.model, model, tokenizer, prompts,
                               progress=lambda fraction: ctx.progress(fraction, "scoring the prompts"))
    likely, sentence = verdict(report)
    result = AgreementResult(n_items=report.n_items, agreement=report.agreement, mean_kl=report.mean_kl,
                             threshold=TRANSFER_THRESHOLD, likely_to_transfer=likely, verdict=sentence)
    result_json = result.model_dump_json()
    ctx.db(lambda: services.record_result(AgreementCheck, row.id, result_json), "recording the result")
    return sentence
