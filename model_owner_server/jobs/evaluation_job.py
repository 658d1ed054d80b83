"""Job: evaluate an uploaded adapter on a task -> the Offsite-Tuning matrix (full zero-shot, emulator
zero-shot, emulator + adapter, plug-in, gaps). The full model's zero-shot row is memoised per task in
the worker, since it does not depend on the adapter."""

from __future__ import annotations

from sqlmodel import Session

from model_owner_server import adapter_checks
from model_owner_server.db.models import Adapter, Emulator, Evaluation
from model_owner_server.emulators.stored import load_stored_emulator
from model_owner_server.evaluation.matrix import Score
from model_owner_server.evaluation.run import evaluate_adapter
from model_owner_server.jobs.worker import JobContext, WorkerServices
from model_owner_server.storage.keys import UPLOADED_DATA, adapter_prefix, evaluation_prefix
from shared.data_formats import MCExample, TrainExample, load_mc_jsonl
from shared.job_outcomes import SERVICE_ROWS

ROWS = SERVICE_ROWS


def load_examples(services: WorkerServices, row: Evaluation) -> list[MCExample] | list[TrainExample]:
    if row.source == "upload":
        return load_mc_jsonl(services.store.local_dir(evaluation_prefix(row.id)) / UPLOADED_DATA)
    from shared.tasks import load_task

    test = load_task(row.task).test
    return test[: row.example_limit] if row.example_limit else test


def _read_rows(services: WorkerServices, evaluation_id: str) -> tuple[Evaluation | None, Adapter | None,
                                                                       Emulator | None]:
    with Session(services.engine, expire_on_commit=False) as session:
        row = session.get(Evaluation, evaluation_id)
        adapter = session.get(Adapter, row.adapter_id) if row else None
        emulator = session.get(Emulator, adapter.emulator_id) if adapter else None
    return row, adapter, emulator


def run_evaluation(ctx: JobContext, services: WorkerServices) -> str:
    row, adapter, emulator = ctx.db(lambda: _read_rows(services, ctx.job.subject_id), "reading the evaluation")
    if row is None or adapter is None or emulator is None:
        raise LookupError(f"evaluation {ctx.job.subject_id} or its adapter/emulator no longer exists")
    ctx.progress(0.0, f"loading data for task {row.task}", force=True)
    examples = load_examples(services, row)
    if not examples:
        raise ValueError(f"task {row.task} has no test examples")
    store = services.store
    model, _tokenizer, manifest = load_stored_emulator(store, services.engine, emulator, "run the evaluation again")
    base = services.base_models.get(manifest.base_model)
    checked = adapter_checks.validate(store.local_dir(adapter_prefix(adapter.id)), base, manifest)
    memo_key = f"full_zero_shot:{base.weights_sha256}:{row.source}:{row.task}:{row.example_limit}"
    memoised = services.memo.get(memo_key) if row.source == "builtin" else None
    known = {"full_zero_shot": memoised} if isinstance(memoised, Score) else None

    def progress(name: str, done: int, total: int) -> None:
        index = ROWS.index(name) if name in ROWS else 0
        fraction = (index + (done / total if total else 1.0)) / len(ROWS)
        ctx.progress(fraction, f"{name}: {done}/{total}")

    matrix = evaluate_adapter(base, model, manifest, checked, row.task, examples, known=known, progress=progress)
    if "full_zero_shot" in matrix.rows:
        score: Score = matrix.rows["full_zero_shot"]
        services.memo[memo_key] = score
    result_json = matrix.model_dump_json()
    ctx.db(lambda: services.record_result(Evaluation, row.id, result_json), "recording the result")
    gap = "n/a" if matrix.privacy_gap is None else f"{matrix.privacy_gap:.2f}"
    return f"evaluated on {len(examples)} examples; privacy gap {gap}"
