"""The training-free start of stage 1: regression-fitted harmonizers and initial importance.

One no-grad pass of the frozen model over `fit_sequences` calibration sequences caches every middle
block's input and output; each harmonizer is fitted by regression to imitate its block. The
importance logits start from block influence (1 - cos of the block's input and output on ordinary
tokens: a block that barely turns the residual stream is the cheapest to replace) or, as an option,
from how well its fitted harmonizer imitates it on held-out sequences. Neither ranking is reliably
better on SmolLM2 (docs/method-notes.md); both are recorded, and the RL step refines the chosen one.
"""

from __future__ import annotations

import torch

from model_owner_server.base_models import LoadedBase
from model_owner_server.emulators.calibration import block_influence, capture_middle, sample_sequences
from model_owner_server.emulators.harmonizer_fit import fit_all
from model_owner_server.emulators.policy import scores_from_errors
from model_owner_server.emulators.profile import Stage1Config, Stage1Init
from shared.harmonizer import Harmonizer

HELD_OUT_SEQUENCES = 16


def initialise(base: LoadedBase, config: Stage1Config, middle: list[int], harmonizers: dict[int, Harmonizer],
               fit_stream: torch.Tensor, held_stream: torch.Tensor) -> Stage1Init:
    """Fit `harmonizers` in place (when config.fit_sequences > 0) and return the initial importance."""
    generator = torch.Generator().manual_seed(config.seed + 7919)
    n_fit = max(config.fit_sequences, 1)
    fit_ids = sample_sequences(fit_stream, n_fit, config.seq_len, generator)
    held_ids = sample_sequences(held_stream, HELD_OUT_SEQUENCES, config.seq_len, generator)
    fit = capture_middle(base.model, middle, fit_ids)
    held = capture_middle(base.model, middle, held_ids)
    influence = block_influence(held)
    steps = config.fit_steps if config.fit_sequences > 0 else 0
    errors = fit_all(harmonizers, fit, held, steps=steps, lr=config.fit_lr, batch_tokens=2048, seed=config.seed)
    fit_error = [errors[i] for i in middle]
    measure = influence if config.init_ranking == "influence" else fit_error
    scores = scores_from_errors(measure, config.init_scale)
    return Stage1Init(influence=influence, fit_error=fit_error, importance=[float(s) for s in scores])
