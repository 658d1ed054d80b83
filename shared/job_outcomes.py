"""Job states and the evaluation matrix: the records a job produces, read by both parties.

The REST bodies (`shared/api.py`, the contract itself) embed them; the server builds them and the data
owner's client parses the same models instead of spelling states and row names by hand.
"""

from __future__ import annotations

import math
from enum import StrEnum

from pydantic import BaseModel, Field


class JobState(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


FINISHED = (JobState.succeeded, JobState.failed, JobState.cancelled)

# Rows of the Offsite-Tuning matrix, in display order, with their titles. The service computes the
# first four; "full_fine_tuning" (the adapter tuned directly on the full model) comes from benchmarks.
MATRIX_ROWS: dict[str, str] = {
    "full_zero_shot": "full model zero-shot",
    "emulator_zero_shot": "emulator zero-shot",
    "emulator_fine_tuned": "emulator + adapter",
    "plug_in": "plug-in (full model + adapter)",
    "full_fine_tuning": "full fine-tuning",
}
SERVICE_ROWS = ("full_zero_shot", "emulator_zero_shot", "emulator_fine_tuned", "plug_in")


class Score(BaseModel):
    metric: str  # "acc" (multiple choice) or "ppl" (language modelling)
    value: float
    stderr: float | None = None
    acc_norm: float | None = None
    acc_norm_stderr: float | None = None
    n: int = 0
    # per-item correctness of `value` (multiple choice only), for paired statistics in benchmarks; never
    # serialised, so stored and served matrices keep their shape
    correct: list[int] | None = Field(default=None, exclude=True)


class EvaluationMatrix(BaseModel):
    """One task, one adapter. Gaps are oriented so that positive means the plug-in is better: privacy
    gap = plug-in - emulator fine-tuned, utility gap = full fine-tuning - plug-in (accuracy points;
    for perplexity tasks, the log-perplexity difference with the same orientation)."""

    task: str
    metric: str
    rows: dict[str, Score] = Field(default_factory=dict)
    privacy_gap: float | None = None
    utility_gap: float | None = None
    adapter_changes_outputs: bool | None = None

    def finish(self) -> EvaluationMatrix:
        def better(a: str, b: str) -> float | None:
            if a not in self.rows or b not in self.rows:
                return None
            x, y = self.rows[a].value, self.rows[b].value
            return 100 * (x - y) if self.metric == "acc" else math.log(y) - math.log(x)

        self.privacy_gap = better("plug_in", "emulator_fine_tuned")
        self.utility_gap = better("full_fine_tuning", "plug_in")
        return self
