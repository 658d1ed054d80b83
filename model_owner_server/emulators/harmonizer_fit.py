"""Per-block regression: fit each harmonizer to imitate its block on cached calibration activations.

For middle block i with input x and output y (ordinary tokens only), minimise the per-token
normalised error ||h_i(x) - y||^2 / ||y||^2. No end-to-end forward is needed, so every harmonizer
starts stage 1 close to its block instead of at the identity (= LayerDrop). Each block's fit is
independent of the others and seeded, so the result does not depend on the order of blocks.
"""

from __future__ import annotations

import torch

from model_owner_server.emulators.calibration import MiddleActivations, ordinary_tokens, relative_error
from shared.harmonizer import Harmonizer


def fit_harmonizer(harmonizer: Harmonizer, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float,
                   batch_tokens: int, generator: torch.Generator) -> None:
    """Adam on minibatches of (x, y) rows; the harmonizer's parameters are updated in place."""
    params = [p for p in harmonizer.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    n = x.shape[0]
    for _ in range(steps):
        rows = torch.randint(0, n, (min(batch_tokens, n),), generator=generator)
        loss = relative_error(harmonizer(x[rows]), y[rows])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()


@torch.no_grad()
def replacement_error(harmonizer: Harmonizer, x: torch.Tensor, y: torch.Tensor, chunk: int = 8192) -> float:
    """Mean per-token normalised error of the harmonizer's output against its block's output."""
    total, count = 0.0, 0
    for start in range(0, x.shape[0], chunk):
        xs, ys = x[start : start + chunk], y[start : start + chunk]
        total += float(relative_error(harmonizer(xs), ys)) * xs.shape[0]
        count += xs.shape[0]
    return total / max(1, count)


def fit_all(harmonizers: dict[int, Harmonizer], fit_acts: MiddleActivations, held_acts: MiddleActivations,
            steps: int, lr: float, batch_tokens: int, seed: int) -> dict[int, float]:
    """Fit every middle block's harmonizer; return its held-out replacement error per full index."""
    errors: dict[int, float] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: one thread is as fast, and immune to a busy machine's other threads
    try:
        for j, full_index in enumerate(fit_acts.middle):
            errors[full_index] = _fit_one(harmonizers[full_index], fit_acts, held_acts, j, steps, lr, batch_tokens,
                                          seed * 1_000_003 + full_index)
    finally:
        torch.set_num_threads(threads)
    return errors


def _fit_one(harmonizer: Harmonizer, fit_acts: MiddleActivations, held_acts: MiddleActivations, j: int, steps: int,
             lr: float, batch_tokens: int, seed: int) -> float:
    x, y = (ordinary_tokens(t) for t in fit_acts.block_io(j))
    harmonizer.train()
    fit_harmonizer(harmonizer, x, y, steps, lr, batch_tokens, torch.Generator().manual_seed(seed))
    hx, hy = (ordinary_tokens(t) for t in held_acts.block_io(j))
    return replacement_error(harmonizer, hx, hy)

