"""The training-free start of stage 1: regression-fitted harmonizers and initial importance.

One no-grad pass of the frozen model over `fit_sequences` calibration sequences caches every middle
block's input and output; each harmonizer is fitted by regression to imitate its block; the
importance logits start from how well that worked on held-out sequences (a block whose harmonizer
imitates it closely is the cheapest to replace). Block influence (1 - cos of the block's input and
output) is recorded beside it as the training-free baseline the learned importance must beat.
"""

from __future__ import annotations

import torch

from model_owner_server.base_models import BaseModel
from model_owner_server.emulators.calibration import block_influence, capture_middle
from model_owner_server.emulators.harmonizer_fit import fit_all
from model_owner_server.emulators.policy import scores_from_errors
from model_owner_server.emulators.profile import Stage1Config, Stage1Init
from shared.harmonizer import Harmonizer

HELD_OUT_SEQUENCES = 16


def _sequences(stream: torch.Tensor, n: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
    high = stream.numel() - seq_len
    if high <= 0:
        raise ValueError(f"calibration text has {stream.numel()} tokens; need more than seq_len={seq_len}")
    starts = torch.randint(0, high, (n,), generator=generator)
    return torch.stack([stream[s : s + seq_len] for s in starts.tolist()])


def initialise(base: BaseModel, config: Stage1Config, middle: list[int], harmonizers: dict[int, Harmonizer],
               fit_stream: torch.Tensor, held_stream: torch.Tensor) -> Stage1Init:
    """Fit `harmonizers` in place (when config.fit_sequences > 0) and return the initial importance."""
    generator = torch.Generator().manual_seed(config.seed + 7919)
    n_fit = max(config.fit_sequences, 1)
    fit = capture_middle(base.model, middle, _sequences(fit_stream, n_fit, config.seq_len, generator))
    held = capture_middle(base.model, middle, _sequences(held_stream, HELD_OUT_SEQUENCES, config.seq_len, generator))
    influence = block_influence(held)
    steps = config.fit_steps if config.fit_sequences > 0 else 0
    errors = fit_all(harmonizers, fit, held, steps=steps, lr=config.fit_lr, batch_tokens=2048, seed=config.seed)
    fit_error = [errors[i] for i in middle]
    measure = influence if config.init_ranking == "influence" else fit_error
    scores = scores_from_errors(measure, config.init_scale)
    return Stage1Init(influence=influence, fit_error=fit_error, importance=[float(s) for s in scores])
