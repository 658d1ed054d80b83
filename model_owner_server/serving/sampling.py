"""Next-token choice per row: greedy at temperature 0, else temperature + top-p with the row's own
seeded generator (a row's tokens do not depend on which other rows share its batch)."""

from __future__ import annotations

import torch


class NonFiniteLogits(ValueError):
    """A row's next-token logits hold NaN or +Inf, or no finite value (its activations overflow)."""


def finite_or_raise(logits: torch.Tensor, produced: int) -> None:
    """As generation's `FiniteLogits`: -Inf alone is allowed, NaN, +Inf or no finite value is not."""
    if bool(torch.isnan(logits).any() or torch.isposinf(logits).any() or torch.isneginf(logits).all()):
        raise NonFiniteLogits(f"non-finite logits after {produced} generated tokens")


def choose(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> int:
    """One row's next token from its (vocab,) logits."""
    if temperature <= 0:
        return int(logits.argmax())
    # shifted so the largest score is 0 (softmax does not change): finite logits near float32's limit divided
    # by a small temperature would otherwise overflow to inf and the softmax to NaN (found by the API fuzz)
    scores = (logits.double() - logits.double().max()) / temperature
    if top_p < 1.0:  # keep the smallest set of tokens whose probability reaches top_p (at least one)
        ordered, order = torch.sort(scores, descending=True)
        cumulative = ordered.softmax(-1).cumsum(-1)
        drop = cumulative - ordered.softmax(-1) >= top_p
        scores = scores.clone()
        scores[order[drop]] = float("-inf")
    probs = scores.softmax(-1).cpu()
    return int(torch.multinomial(probs, 1, generator=generator))
