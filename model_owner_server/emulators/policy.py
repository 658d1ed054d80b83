"""The replacement policy of stage 1 over the importance logits s (one per middle block).

Stage 2 deploys, for a given alpha, the k = round(alpha * M) blocks of lowest importance, so the
masks are nested across alphas. Stage 1 therefore trains the harmonizers on exactly those deployed
masks (`deployed_mask`), and the RL step explores around them with masks of the same size k drawn
without replacement with probabilities softmax(-s) (Plackett-Luce: less important -> more likely
replaced), rather than the paper's "half of every group of 4", which never matches a deployed mask.
"""

from __future__ import annotations

import torch

from model_owner_server.emulators.selection import n_replaced


def sample_mask(scores: torch.Tensor, k: int, generator: torch.Generator) -> tuple[list[int], torch.Tensor]:
    """k positions without replacement, p ~ softmax(-s) among those left; and log pi of the draw."""
    remaining = list(range(scores.numel()))
    replaced: list[int] = []
    log_prob = scores.new_zeros(())
    for _ in range(min(k, len(remaining))):
        logits = -scores[remaining]
        probs = torch.softmax(logits.detach(), dim=0)
        j = int(torch.multinomial(probs, 1, generator=generator).item())
        log_prob = log_prob + torch.log_softmax(logits, dim=0)[j]
        replaced.append(remaining.pop(j))
    return sorted(replaced), log_prob


def deployed_mask(scores: torch.Tensor | list[float], k: int) -> list[int]:
    """The k positions of lowest importance (ties by position): what stage 2 replaces."""
    values = scores.tolist() if isinstance(scores, torch.Tensor) else list(scores)
    order = sorted(range(len(values)), key=lambda i: (values[i], i))
    return sorted(order[:k])


def served_sizes(n_middle: int, alphas: list[float]) -> list[int]:
    """Distinct positive numbers of replaced blocks for the alphas a profile is trained for."""
    return sorted({n_replaced(n_middle, a) for a in alphas} - {0})


def scores_from_errors(errors: list[float], scale: float) -> torch.Tensor:
    """Initial logits from per-block replacement errors: z-scored log error times `scale`
    (a block whose harmonizer imitates it well gets a low score, i.e. is replaced first)."""
    logs = torch.tensor(errors, dtype=torch.float64).clamp_min(1e-12).log()
    std = logs.std() if logs.numel() > 1 else torch.tensor(1.0, dtype=torch.float64)
    z = (logs - logs.mean()) / std.clamp_min(1e-6)
    return (scale * z).float()
