"""Job: an agreement check. The data owner's prompts are scored on the emulator and on the full model;
only the aggregates and the verdict are stored. Cancellable at every scoring batch."""

from __future__ import annotations

from sqlmodel import Session

from model_owner_server.db.models import AgreementCheck, Emulator
from model_owner_server.evaluation.agreement import TRANSFER_THRESHOLD, measure_agreement, verdict
from model_owner_server.jobs.worker import JobContext, WorkerServices
from model_owner_server.storage.keys import PROMPTS_FILE, agreement_prefix, emulator_prefix
from shared.api import AgreementResult
from shared.artifacts import load_emulator
from shared.data_formats import load_prompt_jsonl


def run_agreement_check(ctx: JobContext, services: WorkerServices) -> str:
    with Session(services.engine) as session:
        row = session.get(AgreementCheck, ctx.job.subject_id)
        emulator_row = session.get(Emulator, row.emulator_id) if row else None
    if row is None or emulator_row is None:
        raise LookupError(f"agreement check {ctx.job.subject_id} or its emulator no longer exists")
    ctx.progress(0.0, "loading the prompts and the emulator", force=True)
    prompts = load_prompt_jsonl(services.store.local_dir(agreement_prefix(row.id)) / PROMPTS_FILE)
    model, tokenizer, manifest = load_emulator(services.store.local_dir(emulator_prefix(emulator_row.id)))
    base = services.base_models.get(manifest.base_model)
    report = measure_agreement(base.model, model, tokenizer, prompts,
                               progress=lambda fraction: ctx.progress(fraction, "scoring the prompts"))
    likely, sentence = verdict(report)
    result = AgreementResult(n_items=report.n_items, agreement=report.agreement, mean_kl=report.mean_kl,
                             threshold=TRANSFER_THRESHOLD, likely_to_transfer=likely, verdict=sentence)
    with Session(services.engine) as session:
        stored = session.get(AgreementCheck, row.id)
        assert stored is not None
        stored.result_json = result.model_dump_json()
        session.add(stored)
        session.commit()
    return sentence
