"""Emulator-full agreement: how often an emulator answers a task's prompts as the full model does.

Measured on task-shaped multiple-choice prompts without labels: each side's zero-shot answer is the
choice with the highest summed log-likelihood (the scoring of `shared.scoring`), and its answer
distribution is the softmax of those log-likelihoods over the choices. Agreement is the share of
prompts where the two answers coincide; `mean_kl` is the mean KL(full || emulator) between the two
distributions. On the standard tasks this tracked whether an emulator-tuned adapter transfers, where
perplexity and the initial gradient cosine did not (docs/method-notes.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from pydantic import BaseModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from shared.data_formats import Prompt
from shared.scoring import continuation_pair, loglikelihoods


class AgreementReport(BaseModel):
    """Aggregates only: never either model's answer to a single prompt."""

    n_items: int
    agreement: float  # share of prompts answered with the same choice by both models
    mean_kl: float  # mean KL(full || emulator) of the answer distributions over the choices, in nats


def _log_softmax(values: Sequence[float]) -> list[float]:
    top = max(values)
    norm = top + math.log(sum(math.exp(v - top) for v in values))
    return [v - norm for v in values]


def compare_answers(full: Sequence[Sequence[float]], emulator: Sequence[Sequence[float]]) -> AgreementReport:
    """Agreement and mean KL from the per-prompt choice log-likelihoods of each model (same prompts, same order)."""
    if len(full) != len(emulator) or not full:
        raise ValueError(f"need the same non-zero number of prompts on both sides, got {len(full)} and {len(emulator)}")
    same, kls = 0, []
    for f, e in zip(full, emulator, strict=True):
        if len(f) != len(e) or len(f) < 2:
            raise ValueError("every prompt needs the same >= 2 choices on both sides")
        same += max(range(len(f)), key=f.__getitem__) == max(range(len(e)), key=e.__getitem__)
        lf, le = _log_softmax(f), _log_softmax(e)
        kls.append(sum(math.exp(a) * (a - b) for a, b in zip(lf, le, strict=True)))
    return AgreementReport(n_items=len(full), agreement=same / len(full), mean_kl=sum(kls) / len(kls))


def choice_loglikelihoods(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt],
                          batch_size: int = 16, progress: Callable[[int, int], None] | None = None
                          ) -> list[list[float]]:
    """Per prompt with choices: the summed log-likelihood of each choice after the context."""
    requests = [continuation_pair(p.context, c) for p in prompts for c in p.choices]
    flat = loglikelihoods(model, tokenizer, requests, batch_size, progress)
    out, offset = [], 0
    for p in prompts:
        out.append(flat[offset : offset + len(p.choices)])
        offset += len(p.choices)
    return out


def measure_agreement(full: PreTrainedModel, emulator: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                      prompts: Sequence[Prompt], batch_size: int = 16,
                      progress: Callable[[float], None] | None = None) -> AgreementReport:
    """Agreement of `emulator` with `full` on the prompts that have at least two choices; `progress` hears
    the fraction done (and may raise to stop)."""
    scored = [p for p in prompts if len(p.choices) >= 2]
    if not scored:
        raise ValueError("an agreement check needs prompts with at least two choices each")

    def half(offset: float) -> Callable[[int, int], None] | None:
        if progress is None:
            return None
        return lambda done, total: progress(offset + 0.5 * done / max(total, 1))

    return compare_answers(choice_loglikelihoods(full, tokenizer, scored, batch_size, half(0.0)),
                           choice_loglikelihoods(emulator, tokenizer, scored, batch_size, half(0.5)))


# Agreement at or above which emulator-tuned adapters transferred (utility gap <= 5 points) on the measured
# emulators and tasks: `threshold.agreement` of results/agreement-smollm2-135m-n150.json (`scaleot-bench agreement`).
TRANSFER_THRESHOLD = 0.72


def verdict(report: AgreementReport, threshold: float = TRANSFER_THRESHOLD) -> tuple[bool, str]:
    """(likely to transfer, a sentence for the data owner)."""
    likely = report.agreement >= threshold
    share = f"{100 * report.agreement:.0f}% of {report.n_items} prompts answered as the full model answers"
    if likely:
        return True, (f"adapters tuned on this emulator are likely to transfer for prompts like these ({share}; "
                      f"threshold {100 * threshold:.0f}%)")
    return False, (f"adapters tuned on this emulator are unlikely to transfer for prompts like these ({share}; "
                   f"threshold {100 * threshold:.0f}%): ask for a milder emulator (lower alpha or beta) and check "
                   "again")
