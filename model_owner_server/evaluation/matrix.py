"""Scoring one model for one row of the Offsite-Tuning evaluation matrix.

The matrix, its rows and its gaps are part of the REST contract both parties read
(`shared/job_outcomes.py`); they are re-exported here for the server's modules.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from shared.data_formats import MCExample, TrainExample
from shared.job_outcomes import MATRIX_ROWS, EvaluationMatrix, Score
from shared.perplexity import perplexity
from shared.scoring import NonFiniteScores, score_multiple_choice

ROWS = tuple(MATRIX_ROWS)
__all__ = ["ROWS", "EvaluationMatrix", "Score", "score_model"]


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
    value = perplexity(model, windows)
    if not math.isfinite(value):  # a NaN loss: no perplexity to report (an overflow, not a bad fit)
        raise NonFiniteScores(f"the perplexity is {value} (NaN or Inf): the model's activations overflow on this data")
    return Score(metric="ppl", value=value, n=int(windows.numel()))
