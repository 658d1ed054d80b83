"""The Offsite-Tuning evaluation matrix for one task and one adapter.

Rows: full model zero-shot, emulator zero-shot, emulator + tuned adapter ("emulator fine-tuned"),
plug-in (adapter in the full model) and, in benchmarks, full fine-tuning. Gaps are oriented so that
positive means the plug-in model is better: privacy gap = plug-in - emulator fine-tuned, utility
gap = full fine-tuning - plug-in (accuracy points; for perplexity tasks, the log-perplexity
difference with the same orientation).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from pydantic import BaseModel, Field
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from shared.data_formats import MCExample, TrainExample
from shared.perplexity import perplexity
from shared.scoring import score_multiple_choice

ROWS = ("full_zero_shot", "emulator_zero_shot", "emulator_fine_tuned", "plug_in", "full_fine_tuning")


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


def score_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[MCExample] | list[TrainExample],
    batch_size: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> Score:
    if examples and isinstance(examples[0], MCExample):
        mc = [e for e in examples if isinstance(e, MCExample)]
        r = score_multiple_choice(model, tokenizer, mc, batch_size=batch_size, progress=progress)
        return Score(metric="acc", value=r.acc, stderr=r.acc_stderr, acc_norm=r.acc_norm,
                     acc_norm_stderr=r.acc_norm_stderr, n=r.n, correct=r.correct)
    from shared.perplexity import fixed_windows

    texts = [e.context + e.target for e in examples if isinstance(e, TrainExample)]
    windows = fixed_windows(tokenizer, texts, 256, 32)
    return Score(metric="ppl", value=perplexity(model, windows), n=int(windows.numel()))
