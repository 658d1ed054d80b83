"""What the paper-table benchmark stores per task: one `Cell` per row of the matrix, with the
per-item correctness of every tuning seed, so that every difference can be bootstrapped paired."""

from __future__ import annotations

from pydantic import BaseModel, Field

from benchmarks.offsite_tuning.tuning_select import LrChoice
from benchmarks.reports.stats import correctness_string
from model_owner_server.evaluation.matrix import Score
from shared.manifest import CalibrationRecord

# Reference rows (no emulator involved). "adapter_tuning_full_model" is the upper bound of the
# utility gap: the same adapter blocks tuned directly on the full model (the service's matrix keeps
# calling it "full_fine_tuning"); "full_parameter_fine_tuning" is the paper's full fine-tuning.
REFERENCE_ROWS = ("full_zero_shot", "adapter_tuning_full_model", "full_parameter_fine_tuning")
EMULATOR_ROWS = ("emulator_zero_shot", "emulator_fine_tuned", "plug_in")
ROW_TITLES = {
    "full_zero_shot": "full zero-shot",
    "adapter_tuning_full_model": "adapter-only tuning on the full model",
    "full_parameter_fine_tuning": "full-parameter fine-tuning",
    "emulator_zero_shot": "emulator zero-shot",
    "emulator_fine_tuned": "emulator fine-tuned",
    "plug_in": "plug-in",
}


class Cell(BaseModel):
    """One row of the matrix on one task: accuracy per seed (one entry if seed-independent)."""

    acc: list[float]
    correct: list[str]  # per seed, '0110...' in test-item order
    seconds: float = 0.0  # wall time of tuning + scoring this row (all seeds)

    @property
    def mean(self) -> float:
        return sum(self.acc) / len(self.acc)

    def add(self, score: Score) -> None:
        if score.correct is None:
            raise ValueError("the benchmark needs per-item correctness (multiple-choice scores)")
        self.acc.append(score.value)
        self.correct.append(correctness_string(score.correct))

    @classmethod
    def empty(cls) -> Cell:
        return cls(acc=[], correct=[])


class VariantRow(BaseModel):
    variant: str
    method: str
    alpha: float
    beta: float
    emulator_id: str
    calibrated: bool = False  # the emulator was refined on the task's unlabelled training prompts
    calibration: CalibrationRecord | None = None
    fidelity: dict[str, object] | None = None  # perplexity, kd_error, grad_cosine (see fidelity_probe)
    emulator_zero_shot: Cell
    emulator_fine_tuned: Cell
    plug_in: Cell
    matrices: list[dict[str, object]] = Field(default_factory=list)  # the service's EvaluationMatrix per seed
    emulator_tokens_per_second: float = 0.0
    seconds: float = 0.0  # wall time of this variant on this task: build, fidelity, tuning and scoring


class TaskResult(BaseModel):
    task: str
    chance: float  # mean of 1 / number of choices over the test items
    n_train: int
    n_valid: int
    n_test: int
    seeds: list[int]
    lr: dict[str, LrChoice]
    full_zero_shot: Cell
    adapter_tuning_full_model: Cell
    full_parameter_fine_tuning: Cell
    rows: list[VariantRow]
    # rows of variants the latest resumed run did not ask for: kept (not reported) for a run that asks again
    set_aside: list[VariantRow] = Field(default_factory=list)
    seconds: float = 0.0
    # share of the most frequent gold choice position among the validation items (the "always answer k"
    # baseline); None in states written before it was recorded (filled on resume, `paper_table.run`)
    validation_majority: float | None = None

    def cell(self, row: str, variant: VariantRow | None = None) -> Cell:
        source: BaseModel = variant if row in EMULATOR_ROWS and variant is not None else self
        value = getattr(source, row)
        assert isinstance(value, Cell), row
        return value
