"""Next-token sampling: finite logits near float32's limit at the smallest temperature choose a token
instead of raising (the API fuzz found `probability tensor contains inf/nan` as a 500)."""

from __future__ import annotations

import torch

from model_owner_server.serving.sampling import choose


def test_huge_finite_logits_at_a_small_temperature_still_sample() -> None:
    logits = torch.tensor([3.0e38, -3.0e38, 1.0e38, 0.0])
    generator = torch.Generator().manual_seed(0)
    assert choose(logits, 0.01, 1.0, generator) == 0  # the largest logit wins by a huge margin
    assert choose(logits, 0.01, 1e-9, generator) == 0  # top-p keeps at least one token


def test_negative_infinity_is_never_chosen_and_sampling_follows_the_temperature() -> None:
    logits = torch.tensor([float("-inf"), 0.0, 0.0, float("-inf")])
    generator = torch.Generator().manual_seed(1)
    picks = {choose(logits, 1.0, 1.0, generator) for _ in range(50)}
    assert picks == {1, 2}
    assert choose(torch.tensor([0.0, 5.0, 1.0]), 0.0, 1.0, None) == 1  # temperature 0: greedy
