"""Which function runs which kind of job."""

from __future__ import annotations

from model_owner_server.db.models import JobKind
from model_owner_server.jobs.agreement_job import run_agreement_check
from model_owner_server.jobs.emulator_job import run_emulator_build
from model_owner_server.jobs.evaluation_job import run_evaluation
from model_owner_server.jobs.worker import Handler

HANDLERS: dict[str, Handler] = {
    JobKind.emulator_build: run_emulator_build,
    JobKind.evaluation: run_evaluation,
    JobKind.agreement_check: run_agreement_check,
}
